"""Ensemble combiner plugins: one combiner per module."""
