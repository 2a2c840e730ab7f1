"""Deterministic synthetic models: canonical weights for any :class:`Arch`, as a converter source.

Golden releases and tests build their tiny models here, so nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._model import Arch, Layout
from ._rows import Rows
from ._sourcebase import OwnedMemory
from ._split_rules import canonical_keys, expected_shape, rule_for

__all__ = ["gaussian", "random_weights", "DictSource"]


def _seed(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little") & (2**63 - 1)


def gaussian(shape: Sequence[int], seed: int, *, std: float = 1.0) -> torch.Tensor:
    """Float32 normal draws that are the same bytes on every CPU.

    ``torch.randn`` is not: its vectorised Box-Muller (AVX2, AVX-512, NEON or scalar, chosen at
    run time) rounds differently, so weights drawn with it differ between machines. NumPy's PCG64
    with its ziggurat is integer arithmetic and table lookups; one float64 product by ``std`` and
    one rounding to float32 are exact IEEE operations.

    >>> gaussian([2], seed=0).tolist() == gaussian([2], seed=0).tolist()
    True
    """
    draws = np.random.default_rng(seed).standard_normal(tuple(shape), dtype=np.float64) * std
    return torch.from_numpy(draws.astype(np.float32))


def random_weights(
    arch: Arch, *, seed: int = 0, dtype: torch.dtype = torch.float32, std: float = 0.2
) -> dict[str, torch.Tensor]:
    """Canonical weights (unpadded vocab) drawn per key from ``seed``: same seed, same bytes.

    Norm weights are drawn around 1 so that activations stay in range.
    """
    out = {}
    for key in canonical_keys(arch):
        rule, _, _ = rule_for(key)
        shape = list(expected_shape(rule, arch, padded_vocab=arch.rows_vocab))
        t = gaussian(shape, _seed(seed, key), std=std)
        if key.endswith("layernorm.weight"):
            t = 1.0 + t * 0.5
        out[key] = t.to(dtype)
    return out


class DictSource(OwnedMemory):
    """Canonical tensors held in memory, presented as a converter source."""

    format = "memory"

    def __init__(self, arch: Arch, tensors: dict[str, torch.Tensor], path: Path = Path("<memory>")) -> None:
        self.arch = arch
        self.layout = Layout()
        self.path = path
        self.tensors = tensors

    def keys(self) -> list[str]:
        return canonical_keys(self.arch)

    def get(self, key: str, *, meta: bool = False) -> Rows:
        t = self.tensors[key]
        return Rows.of(t.to("meta") if meta else t)

    def describe(self) -> dict[str, Any]:
        return {"format": self.format}
