"""Synthetic testbeds with gold rewards."""

from alignax.tasks.language import BigramLanguage

__all__ = ["BigramLanguage"]
