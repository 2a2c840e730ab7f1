"""Write tensor bytes at known file offsets, on a few threads at once.

Both converters know where every tensor goes before writing a byte (the safetensors header, the
records of a torch zip), so the bytes can go out with ``pwrite`` from several threads: the kernel's
copy into the page cache, strided copies and CRC-32 all release the GIL. Each thread copies
through its own reusable scratch buffer, so no fresh memory is faulted in per tensor.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType

import torch

from .rows import CHUNK_BYTES, Rows

try:  # the same CRC-32 as zlib's, several times faster (SIMD); both drop the GIL on large buffers
    from zlib_ng.zlib_ng import crc32
except ImportError:  # pragma: no cover - zlib-ng is a dependency; installs without it still work
    from zlib import crc32

__all__ = ["Writer", "default_threads"]


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
            if checksum:
                crc = crc32(chunk, crc)
            view = chunk
            while view:
                n = os.pwrite(fd, view, offset + written)
                if n <= 0:
                    raise OSError(f"pwrite wrote nothing at offset {offset + written}")
                written += n
                view = view[n:]
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

    def split(self, rows: Rows) -> list[tuple[int, Rows]]:
        """``rows`` cut into one row range per thread: (byte offset within the tensor, rows)."""
        parts = min(self.threads, rows.rows) if rows.nbytes >= 2 * CHUNK_BYTES else 1
        if parts <= 1:
            return [(0, rows)]
        row_bytes = rows.nbytes // rows.rows
        bounds = [rows.rows * i // parts for i in range(parts + 1)]
        return [(a * row_bytes, rows.slice(a, b)) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def __enter__(self) -> Writer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
