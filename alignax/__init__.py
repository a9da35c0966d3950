"""alignax: reward modeling and preference alignment in JAX."""

__version__ = "0.1.0"
