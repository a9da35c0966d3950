"""alignax.eval."""
