"""The closing table of areas and the one-line verdict."""

from __future__ import annotations

import pytest

from .session import AREAS, VLASession

__all__ = ["Recorder", "write_summary"]


class Recorder:
    """Feeds every test report (from this process or xdist workers) into the session tallies."""

    def __init__(self, session: VLASession) -> None:
        self.session = session

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.session.record(report)


def write_summary(tr: pytest.TerminalReporter, session: VLASession) -> None:
    tallies = session.summary()
    tr.write_sep("=", "pytest-vla conformance")
    tr.write_line(f"{'area':<17}{'passed':>8}{'failed':>8}{'skipped':>9}")
    for area in AREAS:
        t = tallies[area]
        tr.write_line(f"{area:<17}{t.passed:>8}{t.failed:>8}{t.skipped:>9}")
    verdict = session.verdict()
    tr.write_line(verdict, bold=True, red="DOES NOT" in verdict, green=verdict.endswith(": CONFORMS"))
