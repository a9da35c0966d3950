"""alignax.ops."""
