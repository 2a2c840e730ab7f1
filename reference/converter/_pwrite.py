"""Write tensor bytes at known file offsets, on a few threads at once.

Both converters know where every tensor goes before writing a byte (the safetensors header, the
records of a torch zip), so the bytes can go out with ``pwrite`` from several threads: the kernel's
copy into the page cache, strided copies and CRC-32 all release the GIL. Each thread copies
through its own reusable scratch buffer, so no fresh memory is faulted in per tensor.
"""

from __future__ import annotations

import errno
import os
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Final

import torch

from ._rows import CHUNK_BYTES, Rows

try:  # the same CRC-32 as zlib's, several times faster (SIMD); both drop the GIL on large buffers
    from zlib_ng.zlib_ng import crc32
except ImportError:  # pragma: no cover - zlib-ng is a dependency; installs without it still work
    from zlib import crc32

__all__ = ["Writer", "default_threads", "WRITE_BYTES", "COPY_BYTES"]

# Bytes per pwrite call. The kernel first faults in (reads) the source range of a write, then
# copies it into the page cache; a range that fits in the core's L2 cache is still there for the
# copy. Writing the benchmark's 2.4 GB of weights from a warm page cache took 2.3-2.5 s in 8 MB
# calls, 1.9-2.1 s in 1 MB calls, 1.5 s in 256 KB calls, 1.6-1.8 s in 512 KB and 64 KB calls.
WRITE_BYTES = 256 << 10


# Bytes per copy_file_range call, for chunks that lie in a source file: the kernel copies page
# cache to page cache without mapping the source into this process.
COPY_BYTES = 1 << 20
# What copy_file_range raises where the kernel or the filesystems cannot do it.
_NO_COPY: Final = frozenset({errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})


def _copy_range(src: int, src_offset: int, fd: int, offset: int, n: int) -> tuple[int, bool]:
    """``copy_file_range`` of up to ``n`` bytes; (bytes copied, whether copying works here)."""
    done = 0
    while done < n:
        try:
            k = os.copy_file_range(src, fd, min(n - done, COPY_BYTES), src_offset + done, offset + done)
        except OSError as e:
            if e.errno in _NO_COPY:
                return done, False
            raise
        if k <= 0:  # the source ends early: let the caller's pwrite of the mapped bytes decide
            break
        done += k
    return done, True


def _pwrite_all(fd: int, chunk: memoryview, offset: int) -> None:
    for start in range(0, len(chunk), WRITE_BYTES):
        _pwrite_exact(fd, chunk[start : start + WRITE_BYTES], offset + start)


def _pwrite_exact(fd: int, piece: memoryview, offset: int) -> None:
    while piece:
        n = os.pwrite(fd, piece, offset)
        if n <= 0:
            raise OSError(f"pwrite wrote nothing at offset {offset}")
        offset += n
        piece = piece[n:]


def default_threads() -> int:
    """Writer threads: one per core, at most 8 (beyond that the page cache is the limit)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


class Writer:
    """pwrite of ``Rows`` at file offsets, alone or as parallel jobs.

    Example:
        >>> with Writer(threads=2) as w:                                  # doctest: +SKIP
        ...     w.run([lambda: w.write(fd, 0, a), lambda: w.write(fd, n, b)])
    """

    def __init__(self, *, threads: int | None = None) -> None:
        self.threads = default_threads() if threads is None else max(1, threads)
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="vla-write") if self.threads > 1 else None
        self._local = threading.local()

    def _scratch(self) -> torch.Tensor:
        buf = getattr(self._local, "scratch", None)
        if buf is None:
            buf = self._local.scratch = torch.empty(CHUNK_BYTES, dtype=torch.uint8)
        return buf

    def write(self, fd: int, offset: int, rows: Rows, *, checksum: bool = False) -> tuple[int, int]:
        """Write the bytes of ``rows`` from ``offset`` on; returns (bytes written, CRC-32 or 0)."""
        crc = written = 0
        for chunk in rows.byte_chunks(self._scratch()):
            for start in range(0, len(chunk), WRITE_BYTES):
                piece = chunk[start : start + WRITE_BYTES]
                if checksum:
                    crc = crc32(piece, crc)  # just before the write reads the same bytes again
                _pwrite_exact(fd, piece, offset + written)
                written += len(piece)
        return written, crc

    def run(self, jobs: Sequence[Callable[[], object]]) -> None:
        """Run the jobs on the threads and wait for all of them; the first error is raised."""
        if self._pool is None or len(jobs) < 2:
            for job in jobs:
                job()
            return
        futures = [self._pool.submit(job) for job in jobs]
        errors = [e for f in futures if (e := f.exception()) is not None]
        if errors:
            raise errors[0]

    def stream(
        self,
        fd: int,
        items: Iterable[tuple[int, Rows] | Callable[[], object]],
        *,
        depth: int = 16,
        source: Callable[[memoryview], tuple[int, int] | None] | None = None,
    ) -> None:
        """Write ``(offset, rows)`` items into one file from a single writer thread, in order,
        while the calling thread copies the next blocks into up to ``depth`` scratch buffers.

        One file takes one writer: the kernel serialises buffered writes to a file (the inode
        lock), so more writers would only wait on each other. A callable item runs on the writer
        thread once everything before it is written (to give pages back, count progress).

        ``depth``: a block is about ``BLOCK_BYTES`` (1 MB, or one row where a row is longer), so
        16 buffers let the calling thread run some 16 MB (8 ms of writing) ahead. With 4 the
        writer waited 0.07-0.10 s in all during a warm merge of the benchmark checkpoint, each
        time the calling thread stopped to give pages back or ask for the next ones; with 16,
        0.02 s. A buffer holds ``CHUNK_BYTES`` but only the pages a block touches are resident.

        ``source``: where a zero-copy chunk's bytes lie in a file (descriptor, offset), if they
        do. Those go file to file with ``copy_file_range``, the source's pages never mapped into
        this process; the rest, and everything where the kernel or filesystem cannot copy, goes
        out with ``pwrite``.
        """
        copy_from = source if hasattr(os, "copy_file_range") else None
        free: queue.Queue[torch.Tensor] = queue.Queue()
        for _ in range(depth):
            free.put(torch.empty(CHUNK_BYTES, dtype=torch.uint8))
        work: queue.Queue[tuple[int, memoryview, torch.Tensor | None] | Callable[[], object] | None] = queue.Queue()
        failed: list[BaseException] = []

        def writer() -> None:
            nonlocal copy_from
            while (item := work.get()) is not None:
                if callable(item):
                    if not failed:
                        try:
                            item()
                        except BaseException as e:  # noqa: BLE001 - re-raised on the calling thread
                            failed.append(e)
                    continue
                offset, chunk, buf = item
                if not failed:
                    try:
                        done = 0
                        if buf is None and copy_from is not None and (where := copy_from(chunk)):
                            done, works = _copy_range(*where, fd, offset, len(chunk))
                            copy_from = copy_from if works else None  # this kernel or filesystem cannot
                        _pwrite_all(fd, chunk[done:], offset + done)
                    except BaseException as e:  # noqa: BLE001 - re-raised on the calling thread
                        failed.append(e)
                if buf is not None:
                    free.put(buf)  # keeps draining after a failure, so the caller never blocks

        thread = threading.Thread(target=writer, name="vla-stream", daemon=True)
        thread.start()
        try:
            for item in items:
                if failed:
                    break
                if callable(item):
                    work.put(item)
                    continue
                offset, rows = item
                for chunk, buf in rows.byte_blocks(free.get, CHUNK_BYTES):
                    work.put((offset, chunk, buf))
                    offset += len(chunk)
        finally:
            work.put(None)
            thread.join()
        if failed:
            raise failed[0]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def __enter__(self) -> Writer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
