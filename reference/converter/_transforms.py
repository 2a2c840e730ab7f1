"""How one canonical Megatron parameter becomes Hugging Face tensors and back.

Each codec is a pair of exact inverses over :class:`Rows`; most move no bytes at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ._model import Arch
from ._rows import Rows

__all__ = ["Codec", "IDENTITY", "QKV_SPLIT", "GATED_SPLIT", "TRANSPOSE", "GPT2_QKV", "GPT2_QKV_BIAS"]


class Codec(Protocol):
    @property
    def arity(self) -> int: ...

    def to_hf(self, arch: Arch, x: Rows) -> tuple[Rows, ...]: ...

    def from_hf(self, arch: Arch, parts: tuple[Rows, ...]) -> Rows: ...


@dataclass(frozen=True)
class _Identity:
    arity: int = 1

    def to_hf(self, arch: Arch, x: Rows) -> tuple[Rows, ...]:
        return (x,)

    def from_hf(self, arch: Arch, parts: tuple[Rows, ...]) -> Rows:
        return parts[0]


@dataclass(frozen=True)
class _QKVSplit:
    """[per group g: q heads of g, k_g, v_g] <-> (q_all, k_all, v_all), head-major."""

    arity: int = 3

    def to_hf(self, arch: Arch, x: Rows) -> tuple[Rows, ...]:
        d, g, qpg = arch.kv_channels, arch.num_query_groups, arch.heads_per_group
        groups = x.blocks([(qpg + 2) * d] * g)
        q = Rows.cat([b.slice(0, qpg * d) for b in groups])
        k = Rows.cat([b.slice(qpg * d, (qpg + 1) * d) for b in groups])
        v = Rows.cat([b.slice((qpg + 1) * d, (qpg + 2) * d) for b in groups])
        return q, k, v

    def from_hf(self, arch: Arch, parts: tuple[Rows, ...]) -> Rows:
        d, g, qpg = arch.kv_channels, arch.num_query_groups, arch.heads_per_group
        q, k, v = parts
        qs, ks, vs = q.blocks([qpg * d] * g), k.blocks([d] * g), v.blocks([d] * g)
        return Rows.cat([b for i in range(g) for b in (qs[i], ks[i], vs[i])])


@dataclass(frozen=True)
class _GatedSplit:
    """SwiGLU fc1 [gate; up] <-> (gate, up)."""

    arity: int = 2

    def to_hf(self, arch: Arch, x: Rows) -> tuple[Rows, ...]:
        half = x.rows // 2
        return x.slice(0, half), x.slice(half, x.rows)

    def from_hf(self, arch: Arch, parts: tuple[Rows, ...]) -> Rows:
        return Rows.cat(list(parts))


@dataclass(frozen=True)
class _Transpose:
    """nn.Linear [out, in] <-> GPT-2 Conv1D [in, out]."""

    arity: int = 1

    def to_hf(self, arch: Arch, x: Rows) -> tuple[Rows, ...]:
        return (Rows.of(x.tensor().t().contiguous()),)

    def from_hf(self, arch: Arch, parts: tuple[Rows, ...]) -> Rows:
        return Rows.of(parts[0].tensor().t().contiguous())


@dataclass(frozen=True)
class _GPT2QKV:
    """Megatron per-head [q_h, k_h, v_h] rows <-> GPT-2 c_attn [q_all | k_all | v_all] (Conv1D)."""

    transpose: bool
    arity: int = 1

    def to_hf(self, arch: Arch, x: Rows) -> tuple[Rows, ...]:
        fused = Rows.cat(list(QKV_SPLIT.to_hf(arch, x)))
        return TRANSPOSE.to_hf(arch, fused) if self.transpose else (fused,)

    def from_hf(self, arch: Arch, parts: tuple[Rows, ...]) -> Rows:
        fused = TRANSPOSE.from_hf(arch, parts) if self.transpose else parts[0]
        n = arch.num_query_groups * arch.kv_channels
        q_rows = arch.num_attention_heads * arch.kv_channels
        q, k, v = fused.blocks([q_rows, n, n])
        return QKV_SPLIT.from_hf(arch, (q, k, v))


IDENTITY: Codec = _Identity()
QKV_SPLIT: Codec = _QKVSplit()
GATED_SPLIT: Codec = _GatedSplit()
TRANSPOSE: Codec = _Transpose()
GPT2_QKV: Codec = _GPT2QKV(transpose=True)
GPT2_QKV_BIAS: Codec = _GPT2QKV(transpose=False)
