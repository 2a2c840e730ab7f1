"""Collect every problem a check finds, then fail once with all of them, each a finding line.

The records are the library's one :class:`~vla_reference.findings.Finding`, rendered by its one
renderer: ``<what>: <observed>, expected <expected> [<file>:<line>:<key>]. Fix: <action>``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest

from vla_reference.errors import ReleaseError
from vla_reference.findings import Finding

__all__ = ["Finding", "Findings", "FindingsFailed", "fail"]


class FindingsFailed(pytest.fail.Exception):  # type: ignore[misc,name-defined]
    """A check's failure that carries its findings as records, for the JSON and HTML reports."""

    def __init__(self, msg: str, findings: list[Finding], root: Path | None) -> None:
        super().__init__(msg, pytrace=False)
        self.findings = list(findings)
        self.root = root


def fail(
    what: str,
    observed: object,
    *,
    file: Path | str | None = None,
    key: str | None = None,
    fix: str | None = None,
    root: Path | None = None,
) -> NoReturn:
    """Fail now with one finding, rendered as every finding is (``file`` shown relative to ``root``
    when given and inside it)."""
    __tracebackhide__ = True
    finding = Finding(what, str(observed), None, None if file is None else Path(file), key, fix)
    raise FindingsFailed(finding.render(root), [finding], root)


@dataclass
class Findings:
    """An ordered list of findings about one property; ``check()`` fails the test if any."""

    title: str
    root: Path | None = None
    items: list[Finding] = field(default_factory=list)

    def add(
        self,
        what: str,
        observed: object,
        expected: object | None = None,
        *,
        file: Path | str | None = None,
        key: str | None = None,
        fix: str | None = None,
        line: int | None = None,
    ) -> None:
        self.items.append(
            Finding(
                what,
                str(observed),
                None if expected is None else str(expected),
                None if file is None else Path(file),
                key,
                fix,
                line,
            )
        )

    def extend(self, found: Iterable[Finding]) -> None:
        """Add what a library check returned, as it returned it."""
        self.items.extend(found)

    def add_error(self, e: ReleaseError, what: str | None = None) -> None:
        self.items.append(Finding.from_error(e, what))

    def fail_on(self, e: ReleaseError, what: str) -> NoReturn:
        """Fail now with ``e`` as a finding (after any gathered so far): for an input the check
        cannot go on without."""
        __tracebackhide__ = True
        self.add_error(e, what)
        raise FindingsFailed(self._render(), self.items, self.root)

    def check(self, limit: int = 40) -> None:
        __tracebackhide__ = True
        if self.items:
            raise FindingsFailed(self._render(limit), self.items, self.root)

    def _render(self, limit: int = 40) -> str:
        lines = [f"{self.title}: {len(self.items)} finding(s)"]
        lines += [f"  - {f.render(self.root)}" for f in self.items[:limit]]
        if len(self.items) > limit:
            lines.append(f"  ... and {len(self.items) - limit} more")
        return "\n".join(lines)
