"""Collect the installed conformance suite under its own package name, whatever the rootdir.

pytest would import ``conformance/test_x.py`` as ``conformance.test_x`` (from the directory
name), which collides with a user's own ``conformance`` package. These collectors import the
suite as ``vla_conformance.test_x`` instead, and treat its directory as a plain directory so
its ``__init__.py`` is never imported under another name.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest

__all__ = ["SuiteModule"]


class SuiteModule(pytest.Module):
    """A conformance module imported by its installed name."""

    def _getobj(self) -> ModuleType:
        return importlib.import_module(f"vla_conformance.{self.path.stem}")
