"""Rule IDs: every conformance check has one, unique, in its area's prefix, catalogued in docs/rules.md."""

from __future__ import annotations

import ast
import re

import pytest

from pytest_vla.rules import AREA_PREFIXES, RETIRED, catalogue, markdown, rule

from conftest import REPO

SUITE = REPO / "conformance"


def _suite_tests() -> dict[str, ast.FunctionDef]:
    """Every test function the suite defines, read from its source (not from the catalogue)."""
    out = {}
    for path in sorted(SUITE.glob("test_*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                out[f"{path.name}::{node.name}"] = node
    return out


def test_every_check_has_exactly_one_rule():
    tests = _suite_tests()
    by_test: dict[str, list[str]] = {}
    for r in catalogue():
        by_test.setdefault(r.test, []).append(r.id)
    assert set(by_test) == set(tests), set(tests) ^ set(by_test)
    assert all(len(ids) == 1 for ids in by_test.values()), {t: i for t, i in by_test.items() if len(i) > 1}


def test_ids_are_unique_never_retired_and_named_after_their_area():
    rules = catalogue()
    ids = [r.id for r in rules]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert not set(ids) & RETIRED
    for r in rules:
        assert r.id.startswith(f"VLA-{AREA_PREFIXES[r.area]}-"), (r.id, r.area)
        assert r.proves and r.fix, r


def test_the_catalogue_is_current():
    """docs/rules.md is what `python -m pytest_vla.rules` writes; fix: regenerate it so."""
    assert (REPO / "docs" / "rules.md").read_text() == markdown(), (
        "docs/rules.md is stale: run `python -m pytest_vla.rules > docs/rules.md`"
    )


def test_from_an_id_to_its_test_in_one_hop():
    """Each catalogue row names the file and the function: the function is defined there."""
    tests = _suite_tests()
    for line in (REPO / "docs" / "rules.md").read_text().splitlines():
        m = re.match(r"\| `(VLA-[A-Z]+-\d{3})` \| \w+ \| `([\w.]+::\w+)` \|", line)
        if m:
            assert m.group(2) in tests, m.group(0)


def test_a_malformed_id_is_refused():
    with pytest.raises(ValueError, match="is not a rule ID"):
        rule("CKPT-1", fix="x")
