"""Helpers shared by the tests: import them as ``tests.helpers.<module>`` (never from conftest)."""
