"""Shared fixtures for pytest-vla's own tests."""

pytest_plugins = ["pytester"]
