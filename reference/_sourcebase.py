"""Shared no-op parts of the converter sources (see ``hf.Source``)."""

from __future__ import annotations

from .rows import Rows

__all__ = ["ReadUpFront", "OwnedMemory"]


class ReadUpFront:
    """A source that indexes every tensor when it is opened: nothing pending, nothing to finish."""

    def loaded(self, key: str) -> bool:
        return True

    def finish(self) -> None:
        return None


class OwnedMemory(ReadUpFront):
    """A source whose tensors live in memory it owns (freed with the ``Rows``), not in file
    mappings: no pages to give back after a write, none to read ahead."""

    def release(self, rows: Rows) -> None:
        return None

    def prefetch(self, rows: Rows) -> None:
        return None
