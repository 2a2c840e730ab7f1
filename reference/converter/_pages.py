"""Know which memory lies in file mappings: to give their pages back once written, and to
copy their bytes file to file.

Touched pages of a file mapping count towards a process's RSS until unmapped. The converters
stream one tensor at a time, so after each one they drop its pages with ``madvise(DONTNEED)``;
the next access (if any) faults them in from the page cache again. Only ranges registered as
file mappings are ever advised: on anonymous memory DONTNEED would zero live data.

``file_range`` says where a view's bytes lie in its file (an open descriptor and an offset), so
that a writer can hand them to ``copy_file_range`` and never touch the mapping at all.
"""

from __future__ import annotations

import bisect
import ctypes
import ctypes.util
import mmap
import os
import sys
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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


@dataclass(frozen=True)
class _MappedFile:
    """The file behind a mapping, as /proc/self/maps names it."""

    path: str
    offset: int  # file offset of the mapping's first byte
    device: tuple[int, int]  # major, minor
    inode: int


def _close_all(fds: dict[str, int | None]) -> None:
    for fd in fds.values():
        if fd is not None:
            os.close(fd)
    fds.clear()


class FileMappings:
    """Address ranges of read-only file mappings that may be released after use.

    Files may be registered from one thread (a background load) while another releases pages.
    Descriptors opened by ``file_range`` are closed by ``close`` (or when this is collected).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._files: list[_MappedFile | None] = []
        self._fds: dict[str, int | None] = {}  # path -> descriptor; None: not the mapped file
        self._closer = weakref.finalize(self, _close_all, self._fds)
        self._libc = _libc()
        self._local = threading.local()  # each thread's queued ranges, given back by that thread

    def register_range(self, start: int, length: int, file: _MappedFile | None = None) -> None:
        with self._lock:
            i = bisect.bisect(self._starts, start)
            self._starts.insert(i, start)
            self._ends.insert(i, start + length)
            self._files.insert(i, file)

    def register_file(self, path: Path, held: Iterable[torch.Tensor]) -> None:
        """Record the mappings of ``path`` (as /proc/self/maps shows them) under the tensors in
        ``held``, which the caller keeps alive as long as it uses this.

        Only those: another reader of the same file (an earlier source not yet collected) has
        mappings of that path too, and once it is collected their addresses are reused by
        anonymous memory, which must never be read as the file nor given back with DONTNEED.
        """
        if self._libc is None:
            return
        anchors = sorted({t.untyped_storage().data_ptr() for t in held if not t.is_meta and t.numel()})
        if not anchors:
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
                i = bisect.bisect_left(anchors, lo)
                if i == len(anchors) or anchors[i] >= hi:
                    continue  # no tensor of ours lies in it: someone else's mapping of the file
                major, minor = (int(x, 16) for x in parts[3].split(":"))
                file = _MappedFile(target, int(parts[2], 16), (major, minor), int(parts[4]))
                with self._lock:
                    covered = self._covers(lo, hi)
                if not covered:
                    self.register_range(lo, hi - lo, file)

    def file_range(self, chunk: memoryview) -> tuple[int, int] | None:
        """An open descriptor of the file under ``chunk`` and the chunk's offset in it, if the
        chunk lies in a registered file mapping and the file at that path is still the one
        mapped (same device and inode); else None."""
        n = chunk.nbytes
        if not n or not chunk.contiguous:
            return None
        lo = np.frombuffer(chunk, dtype=np.uint8).ctypes.data
        with self._lock:
            i = bisect.bisect(self._starts, lo) - 1
            if i < 0 or self._ends[i] < lo + n or (file := self._files[i]) is None:
                return None
            start = self._starts[i]
            if file.path not in self._fds:
                self._fds[file.path] = _open_same(file)
            fd = self._fds[file.path]
        return None if fd is None else (fd, file.offset + lo - start)

    def close(self) -> None:
        """Close the descriptors ``file_range`` opened."""
        with self._lock:
            _close_all(self._fds)

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
        threads, which costs far more per call than per page. Each thread queues and gives back
        its own ranges, so a thread that only queues cheap ones (never touched) never pays for
        another's. The mappings must outlive the queue (they do: a source keeps them open while
        it is used), so nothing is advised after its file is closed.
        """
        span = self._range(tensor)
        if span is not None:
            pending = self._queue()
            pending.append(span)
            self._local.bytes += span[1] - span[0]
            if self._local.bytes >= BATCH_BYTES:
                self.flush()

    def _queue(self) -> list[tuple[int, int]]:
        pending: list[tuple[int, int]] | None = getattr(self._local, "pending", None)
        if pending is None:
            pending = self._local.pending = []
            self._local.bytes = 0
        return pending

    def flush(self) -> None:
        """Give back every range this thread queued, now."""
        pending = sorted(self._queue())
        self._local.pending, self._local.bytes = [], 0
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


def _open_same(file: _MappedFile) -> int | None:
    """``file.path`` opened for reading, if it is still the mapped file."""
    try:
        fd = os.open(file.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    st = os.fstat(fd)
    if ((os.major(st.st_dev), os.minor(st.st_dev)), st.st_ino) != (file.device, file.inode):
        os.close(fd)  # replaced since it was mapped, or a filesystem (overlayfs) that reports another inode
        return None
    if hasattr(os, "posix_fadvise"):
        # A larger readahead window for copies out of a cold file: the benchmark's weights copied
        # from a cold cache in 3.3-3.8 s with it and 4.1-8.1 s without (1 MB copy_file_range calls).
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    return fd
