"""Give back the pages of memory-mapped files once their bytes are written.

Touched pages of a file mapping count towards a process's RSS until unmapped. The converters
stream one tensor at a time, so after each one they drop its pages with ``madvise(DONTNEED)``;
the next access (if any) faults them in from the page cache again. Only ranges registered as
file mappings are ever advised: on anonymous memory DONTNEED would zero live data.
"""

from __future__ import annotations

import bisect
import ctypes
import ctypes.util
import mmap
import sys
import threading
from pathlib import Path

import torch

__all__ = ["FileMappings", "BATCH_BYTES"]

_MADV_WILLNEED = 3
_MADV_DONTNEED = 4
_PAGE = mmap.PAGESIZE
# Bytes of released ranges gathered before they are given back in one go (bounds the extra RSS).
BATCH_BYTES = 128 << 20


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name, use_errno=True) if name else None


class FileMappings:
    """Address ranges of read-only file mappings that may be released after use.

    Files may be registered from one thread (a background load) while another releases pages.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._libc = _libc()
        self._pending: list[tuple[int, int]] = []
        self._pending_bytes = 0

    def register_range(self, start: int, length: int) -> None:
        with self._lock:
            i = bisect.bisect(self._starts, start)
            self._starts.insert(i, start)
            self._ends.insert(i, start + length)

    def register_file(self, path: Path) -> None:
        """Record every mapping of ``path`` that /proc/self/maps shows (after torch.load mmap)."""
        if self._libc is None:
            return
        target = str(path.resolve())
        try:
            lines = Path("/proc/self/maps").read_text().splitlines()
        except OSError:
            return
        for line in lines:
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5] == target:
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                with self._lock:
                    covered = self._covers(lo, hi)
                if not covered:
                    self.register_range(lo, hi - lo)

    def _covers(self, lo: int, hi: int) -> bool:
        i = bisect.bisect(self._starts, lo) - 1
        return i >= 0 and self._ends[i] >= hi

    def _range(self, tensor: torch.Tensor) -> tuple[int, int] | None:
        """The page-aligned part of a registered mapping under ``tensor``, if it lies in one."""
        if self._libc is None or tensor.is_meta or tensor.numel() == 0:
            return None
        lo = tensor.data_ptr()
        hi = lo + tensor.numel() * tensor.element_size()
        with self._lock:
            if not self._covers(lo, hi):
                return None
            i = bisect.bisect(self._starts, lo) - 1
            start, end = max(lo - lo % _PAGE, self._starts[i]), min(hi + (-hi) % _PAGE, self._ends[i])
        return (start, end) if end > start else None

    def prefetch(self, tensor: torch.Tensor) -> None:
        """Ask the kernel to start reading the pages under ``tensor`` (``MADV_WILLNEED``) while
        the previous tensor is written: a cold source is then read ahead in large sequential
        requests instead of page fault by page fault."""
        span = self._range(tensor)
        if span is not None and self._libc is not None:
            self._libc.madvise(ctypes.c_void_p(span[0]), ctypes.c_size_t(span[1] - span[0]), _MADV_WILLNEED)

    def release(self, tensor: torch.Tensor) -> None:
        """Drop the resident pages under ``tensor`` if it lies in a registered file mapping.

        Ranges are queued and given back together once ``BATCH_BYTES`` have gathered, adjacent
        ranges as one call: each ``madvise`` flushes the TLB of every core running one of our
        threads, which costs far more per call than per page. The mappings must outlive the
        queue (they do: a source keeps them open while it is used), so nothing is advised after
        its file is closed.
        """
        span = self._range(tensor)
        if span is not None:
            self._pending.append(span)
            self._pending_bytes += span[1] - span[0]
            if self._pending_bytes >= BATCH_BYTES:
                self.flush()

    def flush(self) -> None:
        """Give back every queued range now."""
        pending, self._pending, self._pending_bytes = sorted(self._pending), [], 0
        merged: list[list[int]] = []
        for start, end in pending:
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        libc = self._libc
        if libc is None:
            return
        for start, end in merged:
            libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_DONTNEED)
