"""Shipped codebooks: deterministic generation, byte-exact files with a SHA-256, nearest-code search.

Nearest code: squared Euclidean distance in float64, summed over dimensions in index order (so
the result does not depend on the CPU's SIMD width), ties to the lowest index. Residual
quantisation runs the same search stage by stage on what the previous stages left.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import torch
from safetensors.numpy import load as load_safetensors

from ..converter._rows import Rows
from ..hf._safetensors import header_for, write_rows
from .errors import CodebookError

__all__ = [
    "Codebook",
    "VISUAL_TENSOR",
    "AUDIO_TENSOR",
    "nearest",
    "tie_margin",
    "residual_quantize",
    "residual_decode",
    "visual_codebook",
    "audio_codebooks",
]

VISUAL_TENSOR: Final = "codebook"  # [K, 3 * p * p], one patch per row, layout (channel, dy, dx)
AUDIO_TENSOR: Final = "codebooks"  # [n_q, K, feature_size], one residual stage per slice
_CHUNK: Final = 256  # vectors per distance block: bounds memory at _CHUNK * K float64


@dataclass(frozen=True)
class Codebook:
    """A codebook file's exact bytes and its tensor (float32).

    ``data`` is kept so that ``save_pretrained`` writes the same bytes back (same SHA-256).
    """

    file: str
    data: bytes
    vectors: np.ndarray

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @classmethod
    def from_array(cls, file: str, tensor: str, array: np.ndarray, metadata: Mapping[str, str]) -> Codebook:
        """Serialise ``array`` (as float32) deterministically: same array and metadata, same bytes."""
        t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        buf = io.BytesIO()
        buf.write(header_for([(tensor, tuple(t.shape), t.dtype)], {"format": "pt", **metadata}))
        write_rows(buf, Rows.of(t))
        return cls.parse(file, buf.getvalue(), tensor=tensor)

    @classmethod
    def parse(cls, file: str, data: bytes, *, tensor: str) -> Codebook:
        try:
            arrays = load_safetensors(data)
        except Exception as e:  # safetensors raises its own SafetensorError and others
            raise CodebookError(
                f"not a safetensors file ({e})", path=file, fix="re-export the codebook with safetensors"
            ) from e
        if tensor not in arrays:
            raise CodebookError(
                f"no tensor {tensor!r}, found {sorted(arrays)}", path=file, key=tensor, fix="rename the tensor"
            )
        vectors = arrays[tensor]
        if vectors.dtype != np.float32:
            raise CodebookError(
                f"dtype {vectors.dtype}, expected float32", path=file, key=tensor, fix="save the codebook as float32"
            )
        return cls(file, data, vectors)

    @classmethod
    def load(cls, path: Path, *, file: str, tensor: str, sha256: str, shape: Sequence[int]) -> Codebook:
        """Read ``path`` (the config's ``file``), checking its SHA-256 and shape against the config.

        Raises:
            CodebookError: the file is missing, corrupt, not the one the config pins, or misshapen.
        """
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise CodebookError(
                f"cannot read the codebook ({e.strerror})", path=path, fix="ship the codebook file beside the config"
            ) from e
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise CodebookError(
                f"SHA-256 is {digest}, the config pins {sha256}",
                path=path,
                key="codebook_sha256",
                fix="ship the codebook the model was trained with, or update the pinned hash if this one is",
            )
        book = cls.parse(file, data, tensor=tensor)
        if tuple(book.vectors.shape) != tuple(shape):
            raise CodebookError(
                f"shape {tuple(book.vectors.shape)}, the config expects {tuple(shape)}",
                path=path,
                key=tensor,
                fix="make the config's sizes match the codebook",
            )
        return book

    def write(self, directory: Path) -> Path:
        path = Path(directory) / self.file
        path.write_bytes(self.data)
        return path


def nearest(vectors: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Index of the nearest codebook row for each vector: float64, ties to the lowest index.

    >>> nearest(np.array([[0.4], [0.5], [0.9]]), np.array([[0.0], [1.0]])).tolist()
    [0, 0, 1]
    """
    x = np.asarray(vectors, dtype=np.float64)
    c = np.asarray(codebook, dtype=np.float64)
    out = np.empty(len(x), dtype=np.int64)
    for start in range(0, len(x), _CHUNK):
        block = x[start : start + _CHUNK]
        dist = np.zeros((len(block), len(c)), dtype=np.float64)
        for j in range(c.shape[1]):  # index order: deterministic whatever the SIMD width
            dist += (block[:, j, None] - c[None, :, j]) ** 2
        out[start : start + len(block)] = np.argmin(dist, axis=1)  # first minimum: lowest index
    return out


def tie_margin(vectors: np.ndarray, codebook: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """How far each vector lies from the boundary where its code would change, in vector units.

    For the chosen row ``c`` and any other row ``o`` the boundary is the bisecting hyperplane, at
    distance ``(|x - o|^2 - |x - c|^2) / (2 |o - c|)`` from ``x``; the margin is the smallest over
    ``o`` (``inf`` for a one-row codebook; rows equal to ``c`` never win, ties go to the lowest index).
    A float computed on another CPU moves ``x`` by a few ULP: a margin far above that keeps the code.

    >>> tie_margin(np.array([[0.4]]), np.array([[0.0], [1.0]]), np.array([0])).round(6).tolist()
    [0.1]
    """
    x = np.asarray(vectors, dtype=np.float64)
    c = np.asarray(codebook, dtype=np.float64)
    out = np.full(len(x), np.inf)
    for start in range(0, len(x), _CHUNK):
        block, chosen = x[start : start + _CHUNK], c[codes[start : start + _CHUNK]]
        dist = ((block[:, None, :] - c[None]) ** 2).sum(-1) - ((block - chosen) ** 2).sum(-1)[:, None]
        sep = np.linalg.norm(c[None] - chosen[:, None], axis=-1)
        margin = np.where(sep > 0, dist / np.where(sep > 0, 2 * sep, 1.0), np.inf)
        out[start : start + len(block)] = margin.min(axis=1, initial=np.inf)
    return out


def residual_quantize(vectors: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """Codes ``[n_q, N]``: stage q quantises what stages 0..q-1 left (a neural codec's RVQ)."""
    residual = np.asarray(vectors, dtype=np.float64).copy()
    books = np.asarray(codebooks, dtype=np.float64)
    codes = np.empty((len(books), len(residual)), dtype=np.int64)
    for q, book in enumerate(books):
        codes[q] = nearest(residual, book)
        residual -= book[codes[q]]
    return codes


def residual_decode(codes: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """The sum over stages of the chosen rows: ``[N, D]`` float64."""
    books = np.asarray(codebooks, dtype=np.float64)
    return sum((books[q][codes[q]] for q in range(len(books))), np.zeros((codes.shape[1], books.shape[2])))


def visual_codebook(
    seed: int | Sequence[int],
    *,
    size: int,
    patch_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    jitter: float = 0.05,
) -> np.ndarray:
    """A colour-lattice VQ codebook in normalised pixel space: ``[size, 3 * patch_size**2]`` float32.

    Code ``k = (r * L + g) * L + b`` (``L = size ** (1/3)`` levels per channel) is a flat patch of
    colour ``(r, g, b) / (L - 1)`` normalised by ``mean``/``std``, plus seeded Gaussian texture of
    standard deviation ``jitter``. Decoding a code gives a recognisable colour, so the round trip
    is checkable by eye and by hand.
    """
    levels = round(size ** (1 / 3))
    if levels**3 != size or levels < 2:
        raise ValueError(f"a colour lattice needs a cube number of codes >= 8, got {size}")
    rng = np.random.default_rng(seed)
    area = patch_size * patch_size
    book = np.empty((size, 3 * area), dtype=np.float64)
    for k in range(size):
        rgb = (k // (levels * levels), (k // levels) % levels, k % levels)
        for c in range(3):  # layout (channel, dy, dx): channel-major
            book[k, c * area : (c + 1) * area] = (rgb[c] / (levels - 1) - mean[c]) / std[c]
    book += rng.normal(0.0, jitter, size=book.shape)
    return book.astype(np.float32)


def audio_codebooks(seed: int | Sequence[int], *, n_q: int, size: int, dim: int, scale: float = 0.5) -> np.ndarray:
    """Residual codebooks ``[n_q, size, dim]`` float32: stage q is Gaussian with std ``scale / 2**q``."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.normal(0.0, scale / 2**q, size=(size, dim)) for q in range(n_q)]).astype(np.float32)
