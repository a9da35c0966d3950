"""alignax.losses."""
