"""alignax.models."""
