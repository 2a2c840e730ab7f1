"""pytest-vla: ``pytest --vla-release=PATH`` proves a VLA model release is exact and consistent."""

__version__ = "0.1.0"
