"""Shared no-op parts of the converter sources (see ``hf.Source``)."""

from __future__ import annotations

from ._pages import FileMappings
from .rows import Rows

__all__ = ["ReadUpFront", "OwnedMemory", "InFileMappings"]


class ReadUpFront:
    """A source that indexes every tensor when it is opened: nothing pending, nothing to finish."""

    def loaded(self, key: str) -> bool:
        return True

    def finish(self) -> None:
        return None


class OwnedMemory(ReadUpFront):
    """A source whose tensors live in memory it owns (freed with the ``Rows``), not in file
    mappings: no pages to give back after a write, none to read ahead."""

    def release(self, rows: Rows, *, copied: bool | None = None) -> None:
        return None

    def prefetch(self, rows: Rows) -> None:
        return None

    def file_range(self, chunk: memoryview) -> tuple[int, int] | None:
        return None


class InFileMappings:
    """A source whose tensors are views of file mappings registered in ``pages``: their pages
    are read ahead and given back, and their bytes can be copied file to file."""

    pages: FileMappings

    def release(self, rows: Rows, *, copied: bool | None = None) -> None:
        for p in rows.sources(copied=copied):
            self.pages.release(p)

    def prefetch(self, rows: Rows) -> None:
        for p in rows.sources():
            self.pages.prefetch(p)

    def file_range(self, chunk: memoryview) -> tuple[int, int] | None:
        return self.pages.file_range(chunk)
