"""alignax.sampling."""
