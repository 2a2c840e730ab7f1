"""Collect every problem a check finds, then fail once with all of them, each a finding line.

Line format: ``<what>: <observed>, expected <expected> [<file>:<key>]. Fix: <action>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest

from vla_reference.errors import ReleaseError

__all__ = ["Finding", "Findings"]


@dataclass(frozen=True)
class Finding:
    what: str
    observed: str
    expected: str | None = None
    file: str | None = None
    key: str | None = None
    fix: str | None = None

    def render(self) -> str:
        text = f"{self.what}: {self.observed}"
        if self.expected is not None:
            text += f", expected {self.expected}"
        where = ":".join(x for x in (self.file, self.key) if x)
        if where:
            text += f" [{where}]"
        if self.fix:
            text += f". Fix: {self.fix}"
        return text


@dataclass
class Findings:
    """An ordered list of findings about one property; ``check()`` fails the test if any."""

    title: str
    root: Path | None = None
    items: list[Finding] = field(default_factory=list)

    def rel(self, path: Path | str | None) -> str | None:
        if path is None:
            return None
        p = Path(path)
        if self.root is not None:
            try:
                return p.resolve().relative_to(self.root).as_posix()
            except ValueError:
                pass
        return str(p)

    def add(
        self,
        what: str,
        observed: object,
        expected: object | None = None,
        *,
        file: Path | str | None = None,
        key: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.items.append(
            Finding(what, str(observed), None if expected is None else str(expected), self.rel(file), key, fix)
        )

    def add_error(self, e: ReleaseError, what: str | None = None) -> None:
        self.items.append(Finding(what or type(e).__name__, e.detail, None, self.rel(e.path), e.key, e.fix))

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
        lines += [f"  - {f.render()}" for f in self.items[:limit]]
        if len(self.items) > limit:
            lines.append(f"  ... and {len(self.items) - limit} more")
        return "\n".join(lines)
