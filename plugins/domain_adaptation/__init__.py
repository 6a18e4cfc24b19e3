"""Domain-adaptation plugins: one method per module."""
