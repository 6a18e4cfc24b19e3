"""Run-tracking logger plugins: one logger per module."""
