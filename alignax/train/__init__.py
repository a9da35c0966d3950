"""alignax.train."""
