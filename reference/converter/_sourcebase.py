"""What every converter source is (``Source``), and the parts they share."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from ._model import Arch, Layout
from ._pages import FileMappings
from ._rows import Rows

__all__ = ["Source", "ReadUpFront", "OwnedMemory", "InFileMappings"]


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


class Source(Protocol):
    """Anything that yields canonical parameters: a Megatron checkpoint or a HF directory."""

    arch: Arch
    layout: Layout
    path: Path

    def keys(self) -> list[str]: ...

    def get(self, key: str, *, meta: bool = False) -> Rows: ...

    def release(self, rows: Rows, *, copied: bool | None = None) -> None:
        """Give back the pages under ``rows``' shard views (``Rows.sources`` says which)."""
        ...

    def prefetch(self, rows: Rows) -> None: ...

    def file_range(self, chunk: memoryview) -> tuple[int, int] | None:
        """Where a zero-copy chunk of a ``get`` result lies in a source file: (open descriptor,
        offset), for copying file to file; None if it does not lie in one."""
        ...

    def loaded(self, key: str) -> bool:
        """Whether ``get(key, meta=True)`` describes the stored tensor rather than an expectation."""
        ...

    def finish(self) -> None:
        """Wait for any reading still under way and run the checks that need all of it."""
        ...

    def describe(self) -> dict[str, Any]: ...
