"""alignax.tasks."""
