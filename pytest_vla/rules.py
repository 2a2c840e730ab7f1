"""Rule IDs: every conformance check has one (``VLA-CKPT-001``...), stable once published.

A check declares its ID and its fix beside its code::

    @rule("VLA-CKPT-003", fix="re-run vla-release merge and ship its output as model/")
    def test_merge_equals_shipped_model(...): ...

The ID appears in the failure message and in every report; ``docs/rules.md`` is the catalogue
(``python -m pytest_vla.rules > docs/rules.md``; a test keeps it current). An ID is never reused:
a check that goes away has its ID added to :data:`RETIRED`.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import pytest

__all__ = ["rule", "Rule", "RULE_MARK", "AREA_PREFIXES", "RETIRED", "catalogue", "markdown", "rule_of"]

RULE_MARK: Final = "vla_rule"
# rule ID prefix of each area, in the order the catalogue lists them
AREA_PREFIXES: Final[dict[str, str]] = {
    "checkpoint": "CKPT",
    "parity": "PAR",
    "tokenizer": "TOK",
    "preprocessing": "PRE",
    "card": "CARD",
    "versioning": "VER",
    "manifest": "MAN",
    "reproducibility": "REPRO",
    "examples": "EX",
}
# IDs once published and since withdrawn: never given to another check
RETIRED: Final[frozenset[str]] = frozenset()
_ID: Final = re.compile(r"VLA-([A-Z]+)-(\d{3})\Z")
SUITE_MODULES: Final = tuple(f"vla_conformance.test_{area}" for area in AREA_PREFIXES)


@dataclass(frozen=True)
class Rule:
    """One check: its ID, area, the test that proves it, what it proves and how to fix a failure."""

    id: str
    area: str
    test: str  # module:function
    proves: str
    fix: str


def rule(rule_id: str, *, fix: str) -> pytest.MarkDecorator:
    """The marker that gives a conformance test its rule ID and the fix for a failure."""
    if not _ID.match(rule_id):
        raise ValueError(f"{rule_id!r} is not a rule ID (VLA-<AREA>-<NNN>)")
    return pytest.mark.vla_rule(rule_id, fix=fix)


def rule_of(item: pytest.Item) -> tuple[str, str] | None:
    """(rule ID, fix) of a collected test, if it has one."""
    mark = item.get_closest_marker(RULE_MARK)
    if mark is None or not mark.args:
        return None
    return str(mark.args[0]), str(mark.kwargs.get("fix", ""))


def _marks(obj: Any) -> list[Any]:
    return [m for m in getattr(obj, "pytestmark", []) if m.name == RULE_MARK]


def catalogue() -> list[Rule]:
    """Every rule of the installed suite, in area order then ID order (imports the suite)."""
    rules = []
    for area, name in zip(AREA_PREFIXES, SUITE_MODULES, strict=True):
        module = importlib.import_module(name)
        for fname, func in inspect.getmembers(module, inspect.isfunction):
            if not fname.startswith("test_") or func.__module__ != module.__name__:
                continue
            for mark in _marks(func):
                doc = inspect.getdoc(func) or ""
                proves = " ".join(doc.split("\n\n")[0].split())
                test = f"{name.rpartition('.')[2]}.py::{fname}"
                rules.append(Rule(mark.args[0], area, test, proves, mark.kwargs["fix"]))
    return sorted(rules, key=lambda r: (list(AREA_PREFIXES).index(r.area), r.id))


def _rows(rules: list[Rule]) -> Iterator[str]:
    for r in rules:
        yield f"| `{r.id}` | {r.area} | `{r.test}` | {r.proves} | {r.fix} |"


def markdown(rules: list[Rule] | None = None) -> str:
    """``docs/rules.md``: the catalogue as one table."""
    rules = catalogue() if rules is None else rules
    head = [
        "# Conformance rules",
        "",
        "Every check of the suite, by its stable ID. A failure message starts with the ID; the JSON and",
        "HTML reports carry it. Generated: `python -m pytest_vla.rules > docs/rules.md` (a test keeps",
        "this file current). IDs are never reused.",
        "",
        "| ID | area | test (in `conformance/`) | what it proves | how to fix a failure |",
        "|---|---|---|---|---|",
    ]
    return "\n".join([*head, *_rows(rules)]) + "\n"


def main() -> int:
    sys.stdout.write(markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
