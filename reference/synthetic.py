"""Deterministic synthetic models: canonical weights for any :class:`Arch`, as a converter source.

Golden releases and tests build their tiny models here, so nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from ._sourcebase import OwnedMemory
from .arch import Arch, Layout
from .rows import Rows
from .spec import canonical_keys, expected_shape, rule_for

__all__ = ["random_weights", "DictSource"]


def _seed(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little") & (2**63 - 1)


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
        g = torch.Generator().manual_seed(_seed(seed, key))
        t = torch.randn(shape, generator=g, dtype=torch.float32) * std
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
