"""The one finding record: what, observed, expected, file, key, line and the fix.

Every check of the library (model card, manifest, versioning, reproduction assets, tokenizer
package) returns lists of these instead of raising, so that a conformance test reports every
problem at once; the CLI, the plugin's failure messages and the reports print or serialize the
same record. Rendered: ``<what>: <observed>, expected <expected> [<file>:<line>:<key>]. Fix: <action>``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ReleaseError

__all__ = ["Finding"]


@dataclass(frozen=True)
class Finding:
    """One finding of a check.

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
        """The finding line; ``path`` is shown relative to ``root`` when it lies inside it.

        >>> Finding("x missing", "absent", "a value", Path("model/config.json"), "x", "add it", 3).render()
        'x missing: absent (line 3), expected a value [model/config.json:x]. Fix: add it'
        """
        text = f"{self.what}: {self.observed}"
        if self.line is not None and "(line" not in self.observed:
            text += f" (line {self.line})"
        if self.expected is not None:
            text += f", expected {self.expected}"
        where = [x for x in (self._shown(root), self.key) if x]
        if where:
            text += f" [{':'.join(where)}]"
        if self.fix:
            text += f". Fix: {self.fix}"
        return text

    def _shown(self, root: Path | None) -> str | None:
        """``path``, relative to ``root`` when inside it (POSIX separators)."""
        if self.path is None:
            return None
        if root is not None:
            # the path's own parent resolved, not the file: a link in the release is named where
            # it lies, not by where it points
            path = Path(os.path.abspath(self.path))
            try:
                return (path.parent.resolve() / path.name).relative_to(root.resolve()).as_posix()
            except ValueError:
                pass
        return str(self.path)

    def as_dict(self, root: Path | None = None) -> dict[str, Any]:
        """The record as the JSON report and ``--json`` write it: ``what``, ``observed``,
        ``expected``, ``file`` (relative to ``root`` when inside it), ``key``, ``line``, ``fix``."""
        return {
            "what": self.what,
            "observed": self.observed,
            "expected": self.expected,
            "file": self._shown(root),
            "key": self.key,
            "line": self.line,
            "fix": self.fix,
        }

    @classmethod
    def from_error(cls, e: ReleaseError, what: str | None = None) -> Finding:
        """A library error as a finding: its message is what was observed."""
        return cls(what or type(e).__name__, e.detail, None, e.path, e.key, e.fix)
