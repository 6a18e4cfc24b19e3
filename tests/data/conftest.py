"""Fixtures of the data-layer tests."""

from tests.data.datafiles import tiny_volume  # noqa: F401
