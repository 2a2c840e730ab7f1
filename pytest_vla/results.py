"""What every check did, collected in the controller from this process's and xdist workers' reports.

On the worker side (``pytest_runtest_makereport``) each report is given, as user properties that
xdist carries to the controller, the check's rule ID and fix, and on failure its findings as
records; a failure message starts with the rule ID. On the controller side
(``pytest_runtest_logreport``) the phases of each test fold into one :class:`CheckResult`.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest

from vla_reference.errors import ReleaseError
from vla_reference.findings import Finding

from .findings import FindingsFailed
from .rules import rule_of

__all__ = ["CheckResult", "Results", "MEASURED", "measure"]

RULE: Final = "vla_rule"
FIX: Final = "vla_fix"
FINDINGS: Final = "vla_findings"
MEASURED: Final = "vla_measured"
_STATUS_ORDER: Final = {"passed": 0, "skipped": 1, "failed": 2}


@dataclass
class CheckResult:
    """One conformance check's outcome, as the reports show it."""

    nodeid: str
    area: str | None
    rule: str | None = None
    fix: str | None = None
    status: str = "passed"  # passed | failed | skipped
    duration_s: float = 0.0
    findings: list[dict[str, Any]] = field(default_factory=list)
    measured: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None  # why it skipped, or its failure's first line

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "area": self.area,
            "nodeid": self.nodeid,
            "status": self.status,
            "duration_s": round(self.duration_s, 6),
            "findings": self.findings,
            "measured": self.measured,
            "reason": self.reason,
            "fix": self.fix,
        }


def _release_root(item: pytest.Item) -> Path | None:
    from .session import SESSION_KEY

    session = item.config.stash.get(SESSION_KEY, None)
    return session.options.release if session is not None else None


def measure(item: pytest.Item, key: str, value: Any) -> None:
    """Record a value a check measured (JSON-serializable) for the reports; dicts measured under
    one key are merged."""
    item.user_properties.append((MEASURED, (key, value)))


def _findings_of(
    excinfo: pytest.ExceptionInfo[BaseException], text: str, fix: str, root: Path | None
) -> list[dict[str, Any]]:
    """The failure's findings, their files relative to the release (``root``) where inside it; an
    exception that carries none (an assertion, an error in a fixture of another plugin) is one
    finding: its first line, and the rule's fix."""
    value = excinfo.value
    if isinstance(value, FindingsFailed):
        return [f.as_dict(value.root or root) for f in value.findings]
    first = (text.strip().splitlines() or [type(value).__name__])[0]
    return [Finding(what=type(value).__name__, observed=first, fix=fix or None).as_dict()]


class Results:
    """The hooks that annotate and collect reports; ``area_of`` names a test's area from its keywords."""

    def __init__(self, areas: tuple[str, ...]) -> None:
        self.areas = areas
        self.checks: dict[str, CheckResult] = {}

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
        outcome = yield
        rep: pytest.TestReport = outcome.get_result()
        found = rule_of(item)
        if found is None:
            return
        rule_id, fix = found
        if call.when == "setup":
            rep.user_properties.extend([(RULE, rule_id), (FIX, fix)])
        if rep.failed and call.excinfo is not None:
            value = call.excinfo.value
            if isinstance(value, ReleaseError) and not isinstance(value, FindingsFailed):
                # a library error no check caught (a hostile file met where none was expected):
                # the finding it carries, not a traceback
                root = _release_root(item)
                finding = Finding.from_error(value, "release file unreadable")
                rep.longrepr = f"{finding.render(root)}"
                rep.user_properties.append((FINDINGS, [finding.as_dict(root)]))
                rep.longrepr = f"[{rule_id}] {rep.longrepr}"
                return
            text = str(rep.longrepr)
            rep.user_properties.append((FINDINGS, _findings_of(call.excinfo, text, fix, _release_root(item))))
            rep.longrepr = f"[{rule_id}] {text}"

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        area = next((a for a in self.areas if a in report.keywords), None)
        check = self.checks.setdefault(report.nodeid, CheckResult(report.nodeid, area))
        check.duration_s += report.duration
        props: dict[str, Any] = dict(report.user_properties)
        check.rule = check.rule or props.get(RULE)
        check.fix = check.fix or props.get(FIX)
        for key, value in report.user_properties:
            if key == MEASURED:
                pair: tuple[str, Any] = value  # type: ignore[assignment]
                known = check.measured.get(pair[0])
                if isinstance(known, dict) and isinstance(pair[1], dict):
                    known.update(pair[1])  # several measurements under one key (parity per layout)
                else:
                    check.measured[pair[0]] = pair[1]
        outcome = "failed" if report.failed else "skipped" if report.skipped else "passed"
        if outcome == "passed" and report.when != "call":
            return  # setup and teardown pass for every test; only the call says it passed
        if _STATUS_ORDER[outcome] >= _STATUS_ORDER[check.status]:
            check.status = outcome
        if outcome == "failed" and FINDINGS in props and not check.findings:
            check.findings = list(props[FINDINGS])
            check.reason = str(report.longrepr).splitlines()[0] if report.longrepr else None
        elif outcome == "skipped" and isinstance(report.longrepr, tuple):
            check.reason = str(report.longrepr[2]).removeprefix("Skipped: ")

    def in_area(self) -> list[CheckResult]:
        return [c for c in self.checks.values() if c.area is not None]
