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

__all__ = ["Finding", "Findings"]


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
        pytest.fail(self._render(), pytrace=False)

    def check(self, limit: int = 40) -> None:
        __tracebackhide__ = True
        if self.items:
            pytest.fail(self._render(limit), pytrace=False)

    def _render(self, limit: int = 40) -> str:
        lines = [f"{self.title}: {len(self.items)} finding(s)"]
        lines += [f"  - {f.render(self.root)}" for f in self.items[:limit]]
        if len(self.items) > limit:
            lines.append(f"  ... and {len(self.items) - limit} more")
        return "\n".join(lines)
