"""Tensors as lists of row blocks, so that merging and splitting never copy what they can slice.

A merged column-parallel weight is its shards one after another; a SwiGLU ``fc1`` is slices of
every shard; a fused QKV is per-group slices. All of these are row (dim 0) blocks of
memory-mapped shard tensors, so the writer can stream their bytes straight to disk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final, TypeGuard

import numpy as np
import torch

__all__ = ["Rows", "HCat", "CHUNK_BYTES"]

# Target size of one block when row-parallel shards are joined: big enough to write efficiently,
# small enough that memory never holds a whole matrix.
_BLOCK_BYTES = 8 << 20


@dataclass(frozen=True)
class HCat:
    """Rows ``start:stop`` of shards joined along dim 1, made only when its bytes are needed.

    The merged form of a row-parallel weight is, row by row, every shard's row side by side; as a
    list of these blocks it streams to disk one small block at a time. ``cols`` narrows the join to
    a column range (a row-parallel weight split again for another TP size).
    """

    shards: tuple[torch.Tensor, ...]
    start: int
    stop: int
    cols: tuple[int, int] | None = None

    @property
    def width(self) -> int:
        return sum(int(s.shape[1]) for s in self.shards)

    @property
    def shape(self) -> tuple[int, ...]:
        lo, hi = self.cols or (0, self.width)
        return (self.stop - self.start, hi - lo)

    @property
    def dtype(self) -> torch.dtype:
        return self.shards[0].dtype

    @property
    def is_meta(self) -> bool:
        return self.shards[0].is_meta

    def numel(self) -> int:
        rows, cols = self.shape
        return rows * cols

    def __getitem__(self, rows: slice) -> HCat:
        lo, hi, _ = rows.indices(self.stop - self.start)
        return HCat(self.shards, self.start + lo, self.start + hi, self.cols)

    def columns(self, lo: int, hi: int) -> HCat:
        base = self.cols[0] if self.cols else 0
        return HCat(self.shards, self.start, self.stop, (base + lo, base + hi))

    def to(self, device: str) -> torch.Tensor:
        return torch.empty(self.shape, dtype=self.dtype, device=device)

    def tensor(self) -> torch.Tensor:
        return torch.cat(self.sources(), dim=1)

    def sources(self) -> list[torch.Tensor]:
        lo, hi = self.cols or (0, self.width)
        out, at = [], 0
        for s in self.shards:
            w = int(s.shape[1])
            a, b = max(lo - at, 0), min(hi - at, w)
            if a < b:
                out.append(s[self.start : self.stop] if (a, b) == (0, w) else s[self.start : self.stop, a:b])
            at += w
        return out

    @staticmethod
    def blocks(shards: list[torch.Tensor]) -> list[HCat]:
        rows = int(shards[0].shape[0])
        row_bytes = max(sum(int(s.shape[1]) for s in shards) * shards[0].element_size(), 1)
        step = max(_BLOCK_BYTES // row_bytes, 1)
        return [HCat(tuple(shards), a, min(a + step, rows)) for a in range(0, rows, step)]


Piece = torch.Tensor | HCat


def _materialize(p: Piece) -> torch.Tensor:
    return p.tensor() if isinstance(p, HCat) else p


# Largest chunk handed to a writer at once, and the size of a scratch buffer (so a single row of
# up to 8 MB can still be copied block-wise); the writer cuts it into WRITE_BYTES pwrites.
CHUNK_BYTES = 8 << 20
# Rows copied into scratch per block: about 1 MB, so the block is still in cache when it is written.
BLOCK_BYTES = 1 << 20


_SAME_SIZE_INT: Final = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    """The same memory as a numpy array of integers of the element's size (bf16 has no numpy type).

    Block copies go through numpy, single-threaded with the GIL released: torch's would start
    its OpenMP workers, whose spin-waits between small copies took the cores the writer threads
    need (17% of perf samples during a merge here).
    """
    return t.view(_SAME_SIZE_INT[t.element_size()]).numpy()


def _direct(p: Piece) -> TypeGuard[torch.Tensor]:
    """Whether ``byte_blocks`` hands out the piece's own memory rather than a copy of it."""
    return isinstance(p, torch.Tensor) and p.is_contiguous()


def _cut(t: torch.Tensor) -> Iterator[memoryview]:
    flat = memoryview(t.reshape(-1).view(torch.uint8).numpy())  # type: ignore[arg-type]  # ndarray is a buffer
    for a in range(0, len(flat), CHUNK_BYTES):
        yield flat[a : a + CHUNK_BYTES]


@dataclass(frozen=True)
class Rows:
    """A tensor of ``shape`` whose bytes are the bytes of ``pieces``, in order.

    Every piece has the trailing shape ``shape[1:]`` and the same dtype; pieces are dim-0
    blocks (views into shard files where possible).
    """

    shape: tuple[int, ...]
    dtype: torch.dtype
    pieces: tuple[Piece, ...]

    @staticmethod
    def of(tensor: torch.Tensor) -> Rows:
        if tensor.dim() == 0:
            tensor = tensor.reshape(1)
        return Rows(tuple(tensor.shape), tensor.dtype, (tensor,))

    @staticmethod
    def cat(parts: Sequence[Rows]) -> Rows:
        first = parts[0]
        for p in parts[1:]:
            if p.shape[1:] != first.shape[1:] or p.dtype != first.dtype:
                raise ValueError(f"cannot stack {p.shape}/{p.dtype} under {first.shape}/{first.dtype}")
        rows = sum(p.shape[0] for p in parts)
        return Rows((rows, *first.shape[1:]), first.dtype, tuple(x for p in parts for x in p.pieces))

    @staticmethod
    def hcat(shards: list[torch.Tensor]) -> Rows:
        """Shards joined along dim 1 (row-parallel merge), as lazily-made row blocks."""
        if any(s.is_meta for s in shards):
            rows, cols = int(shards[0].shape[0]), sum(int(s.shape[1]) for s in shards)
            return Rows.of(torch.empty((rows, cols), dtype=shards[0].dtype, device="meta"))
        blocks = HCat.blocks(shards)
        return Rows((int(shards[0].shape[0]), blocks[0].shape[1]), shards[0].dtype, tuple(blocks))

    @staticmethod
    def zeros(rows: int, like: Rows) -> Rows:
        meta = bool(like.pieces) and like.is_meta
        return Rows.of(torch.zeros((rows, *like.shape[1:]), dtype=like.dtype, device="meta" if meta else "cpu"))

    @property
    def rows(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n * self.dtype.itemsize

    @property
    def is_meta(self) -> bool:
        return any(p.is_meta for p in self.pieces)

    def slice(self, start: int, stop: int) -> Rows:
        """Rows ``start:stop``, still as views."""
        if not 0 <= start <= stop <= self.rows:
            raise IndexError(f"rows {start}:{stop} outside {self.rows}")
        out: list[Piece] = []
        offset = 0
        for p in self.pieces:
            n = p.shape[0]
            lo, hi = max(start - offset, 0), min(stop - offset, n)
            if lo < hi:
                out.append(p if (lo, hi) == (0, n) else p[lo:hi])
            offset += n
            if offset >= stop:
                break
        return Rows((stop - start, *self.shape[1:]), self.dtype, tuple(out))

    def columns(self, lo: int, hi: int) -> Rows:
        """Columns ``lo:hi`` of a 2-D tensor (a row-parallel split), still as views."""
        if len(self.shape) != 2 or not 0 <= lo <= hi <= self.shape[1]:
            raise IndexError(f"columns {lo}:{hi} outside {self.shape}")
        pieces = tuple(p.columns(lo, hi) if isinstance(p, HCat) else p[:, lo:hi] for p in self.pieces)
        return Rows((self.rows, hi - lo), self.dtype, pieces)

    def blocks(self, sizes: Sequence[int]) -> list[Rows]:
        """Consecutive row blocks of the given sizes, which must add up to ``rows``."""
        if sum(sizes) != self.rows:
            raise ValueError(f"block sizes {list(sizes)} do not add up to {self.rows} rows")
        out, start = [], 0
        for n in sizes:
            out.append(self.slice(start, start + n))
            start += n
        return out

    def tensor(self) -> torch.Tensor:
        """The tensor itself (copies when there is more than one piece)."""
        if len(self.pieces) == 1:
            t = _materialize(self.pieces[0])
        elif not self.pieces:
            t = torch.empty(self.shape, dtype=self.dtype)
        else:
            t = torch.cat([_materialize(p) for p in self.pieces], dim=0)
        return t.reshape(self.shape)

    def meta(self) -> Rows:
        """The same shape and dtype, no data: for planning without reading."""
        return Rows(self.shape, self.dtype, tuple(p.to("meta") for p in self.pieces))

    def byte_chunks(self, scratch: torch.Tensor | None = None) -> Iterator[memoryview]:
        """The bytes of the tensor, in order, without concatenating pieces.

        Contiguous pieces come out as zero-copy views, cut at ``CHUNK_BYTES``. With ``scratch`` (a
        flat ``uint8`` buffer), pieces that need a copy (strided slices, row-parallel joins) are
        copied into it block by block instead of into fresh memory, so no page is faulted in anew:
        each chunk is then valid only until the next one is asked for.
        """
        lend = None if scratch is None else (lambda: scratch)
        for chunk, _ in self.byte_blocks(lend, 0 if scratch is None else scratch.numel()):
            yield chunk

    def byte_blocks(
        self, scratch: Callable[[], torch.Tensor] | None, scratch_bytes: int
    ) -> Iterator[tuple[memoryview, torch.Tensor | None]]:
        """Like ``byte_chunks``, with a fresh ``scratch()`` buffer (of ``scratch_bytes``) for every
        copied block, yielded alongside it so that a consumer on another thread can hand the
        buffer back once the bytes are written (``None`` for zero-copy chunks).
        """
        for piece in self.pieces:
            if piece.numel() == 0:
                continue
            if _direct(piece):
                for chunk in _cut(piece):
                    yield chunk, None
                continue
            row_bytes = (piece.numel() // piece.shape[0]) * self.dtype.itemsize
            if scratch is None or row_bytes > scratch_bytes:
                for chunk in _cut(_materialize(piece).contiguous()):
                    yield chunk, None
                continue
            step = max(1, min(scratch_bytes, BLOCK_BYTES) // row_bytes)
            for a in range(0, piece.shape[0], step):
                block = piece[a : a + step]
                n = block.numel() * self.dtype.itemsize
                buf = scratch()
                out = _as_numpy(buf[:n].view(self.dtype).view(block.shape))
                if isinstance(block, HCat):
                    np.concatenate([_as_numpy(s) for s in block.sources()], axis=1, out=out)
                else:
                    np.copyto(out, _as_numpy(block))
                yield memoryview(buf[:n].numpy()), buf  # type: ignore[arg-type]  # ndarray is a buffer

    def sources(self, *, copied: bool | None = None) -> list[torch.Tensor]:
        """The tensors the bytes come from (shard views), for giving their pages back.

        ``copied=True``: only those ``byte_blocks`` copies on the calling thread (joins, strided
        slices), read once their blocks are made; ``False``: only those it hands out as they are,
        read when (and if) the consumer writes them from memory.
        """
        out: list[torch.Tensor] = []
        for p in self.pieces:
            if copied is None or copied != _direct(p):
                out.extend(p.sources() if isinstance(p, HCat) else [p])
        return out

    def equal(self, other: Rows) -> bool:
        return self.shape == other.shape and self.dtype == other.dtype and torch.equal(self.tensor(), other.tensor())
