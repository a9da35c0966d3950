"""alignax.data."""
