"""alignax.algorithms."""
