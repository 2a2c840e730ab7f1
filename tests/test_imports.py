"""The nevers of the layout, read from the source (AST): each violation named by file and line.

- the library (``vla_reference``) never imports pytest, syrupy, hypothesis, the plugin or the suite;
- the plugin never imports the suite (it finds its directory with ``importlib.util.find_spec``);
- the plugin and the suite reach the library through its public surfaces: no private module
  (``vla_reference._x``, ``vla_reference.pkg._x``) and no private name.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO

ROOTS = {
    "vla_reference": REPO / "reference",
    "pytest_vla": REPO / "pytest_vla",
    "vla_conformance": REPO / "conformance",
}
NEVER = {
    "vla_reference": ("pytest", "_pytest", "syrupy", "hypothesis", "pytest_vla", "vla_conformance"),
    "pytest_vla": ("vla_conformance",),
    "vla_conformance": (),
}


def _imports(package: str) -> Iterator[tuple[Path, int, str, list[str]]]:
    """(file, line, imported module, imported names) of every import in ``package``."""
    root = ROOTS[package]
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        here = [package, *parts[:-1]]  # the package a relative import starts from
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, node.lineno, alias.name, []
            elif isinstance(node, ast.ImportFrom):
                base = here[: len(here) - node.level + 1] if node.level else []
                module = ".".join([*base, *([node.module] if node.module else [])])
                yield path, node.lineno, module, [a.name for a in node.names]


def _where(path: Path, line: int, what: str) -> str:
    return f"{path.relative_to(REPO)}:{line}: {what}"


@pytest.mark.parametrize("package", sorted(NEVER))
def test_never_imported(package):
    bad = [
        _where(path, line, f"imports {module}")
        for path, line, module, _ in _imports(package)
        if module.split(".")[0] in NEVER[package]
    ]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("package", ["pytest_vla", "vla_conformance"])
def test_the_library_is_reached_through_its_public_surfaces(package):
    bad = []
    for path, line, module, names in _imports(package):
        if module.split(".")[0] != "vla_reference":
            continue
        if any(part.startswith("_") for part in module.split(".")[1:]):
            bad.append(_where(path, line, f"imports the private module {module}"))
        bad += [_where(path, line, f"imports the private name {module}.{n}") for n in names if n.startswith("_")]
    assert not bad, "\n".join(bad)


def test_the_walk_sees_imports():
    """The AST walk finds what is there (a walk that finds nothing would pass every test above)."""
    found = {module for _, _, module, _ in _imports("vla_conformance")}
    assert "vla_reference.parity" in found or any(m.startswith("vla_reference.") for m in found)
    assert any(m == "pytest" for _, _, m, _ in _imports("pytest_vla"))
