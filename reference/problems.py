"""A problem a metadata check found: what, observed, expected, where and the fix.

The metadata checks (model card, manifest, versioning, reproduction assets) return lists of these
instead of raising, so that a conformance test reports every problem at once and the CLI prints
the same lines. Rendered: ``<what>: <observed>, expected <expected> [<file>:<key>]. Fix: <action>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["Problem"]


@dataclass(frozen=True)
class Problem:
    """One finding of a metadata check.

    Attributes:
        what: The property that does not hold ("out-of-scope use not stated").
        observed: What was found.
        expected: What should be there, if that can be said.
        path: The file at fault.
        key: The key, section or tensor at fault.
        fix: One sentence on what to do about it.
        line: The 1-based line in ``path``, when the file is text.
    """

    what: str
    observed: str
    expected: str | None = None
    path: Path | None = None
    key: str | None = None
    fix: str | None = None
    line: int | None = None

    def render(self, root: Path | None = None) -> str:
        """The finding line; ``path`` is shown relative to ``root`` when it lies inside it."""
        text = f"{self.what}: {self.observed}"
        if self.expected is not None:
            text += f", expected {self.expected}"
        where = [x for x in (self.where(root), self.key) if x]
        if where:
            text += f" [{':'.join(where)}]"
        if self.fix:
            text += f". Fix: {self.fix}"
        return text

    def where(self, root: Path | None = None) -> str | None:
        """``path`` (relative to ``root`` if inside it), with ``:line`` when known."""
        if self.path is None:
            return None
        shown = str(self.path)
        if root is not None:
            try:
                shown = self.path.resolve().relative_to(root.resolve()).as_posix()
            except ValueError:
                pass
        return f"{shown}:{self.line}" if self.line is not None else shown
