"""Helpers shared by the tests (import as ``helpers.<module>``; ``tests/`` is on the path under pytest)."""
