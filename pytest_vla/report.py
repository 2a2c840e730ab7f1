"""The terminal's closing block: a table of areas, each failing rule with its fix, the verdict."""

from __future__ import annotations

import pytest

from .session import AREAS, VLASession

__all__ = ["write_summary"]


def write_summary(tr: pytest.TerminalReporter, session: VLASession) -> None:
    tallies = session.summary()
    coverage = session.coverage()
    tr.write_sep("=", "pytest-vla conformance")
    tr.write_line(f"{'area':<17}{'passed':>8}{'failed':>8}{'skipped':>9}  ")
    for area in AREAS:
        t = tallies[area]
        note = "" if coverage[area] is None else f"  not checked: {coverage[area]}"
        tr.write_line(f"{area:<17}{t.passed:>8}{t.failed:>8}{t.skipped:>9}{note}")
    failed = session.failed_checks()
    if failed:
        tr.write_line("")
        seen = set()
        for check in failed:
            key = check.rule or check.nodeid
            if key in seen:
                continue
            seen.add(key)
            n = sum(1 for c in failed if (c.rule or c.nodeid) == key)
            times = f" ({n} cases)" if n > 1 else ""
            tr.write_line(f"{key}{times}: {check.nodeid.rpartition('::')[2]}. Fix: {check.fix or '-'}", red=True)
    verdict = session.verdict()
    tr.write_line(verdict, bold=True, red="DOES NOT" in verdict, green=verdict.endswith(": CONFORMS"))
