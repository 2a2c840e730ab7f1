"""The examples in the library's docstrings run and print what they show."""

import doctest
import importlib
import pkgutil

import pytest

import vla_reference

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(vla_reference.__path__, "vla_reference.")
    if not m.ispkg and not m.name.endswith(".__main__")  # a command: importing it runs it
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (see stdout)"
