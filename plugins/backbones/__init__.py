"""Backbone plugins: one architecture family per module."""
