"""Transfer-strategy plugins: one strategy per module."""
