"""Which rows of a canonical parameter each tensor-parallel rank holds, derived from its rule.

One function, :func:`rank_ranges`, states the layout; merging is its inverse and splitting is
its direct use, so the two cannot disagree.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import LayoutError, ShardMismatchError
from ._model import Arch
from ._rows import Rows
from ._split_rules import Fused, ParamRule, Split

__all__ = ["rank_ranges", "rank_shape", "merge_tp", "split_tp"]


def _even(total: int, tp: int, rank: int, what: str) -> tuple[int, int]:
    if total % tp:
        raise LayoutError(f"{what}: {total} rows do not split evenly over TP={tp}")
    n = total // tp
    return rank * n, (rank + 1) * n


def rank_ranges(rule: ParamRule, arch: Arch, total: int, tp: int, rank: int) -> list[tuple[int, int]]:
    """Canonical dim-0 row ranges held by ``rank``, in the order the rank stores them.

    Only for COLUMN and VOCAB rules; ``total`` is the full (padded) row count.
    """
    if rule.fused is Fused.GATED and arch.swiglu:
        half = total // 2
        lo, hi = _even(half, tp, rank, rule.template)
        # every rank: [gate_r; up_r]
        return [(lo, hi), (half + lo, half + hi)]
    if rule.fused is Fused.QKV:
        return _qkv_ranges(arch, tp, rank, per_head=total // arch.qkv_rows * arch.kv_channels)
    return [_even(total, tp, rank, rule.template)]


def _qkv_ranges(arch: Arch, tp: int, rank: int, per_head: int) -> list[tuple[int, int]]:
    # linear_qkv is an ordinary column-parallel linear over the group-interleaved matrix
    # (per query group: [q_0..q_{h/g-1}, k, v]), split evenly: with G >= TP a rank holds G/TP whole
    # groups; with G < TP (TP a multiple of G) a rank holds 1/(TP/G) of one group's rows, and
    # megatron-core all-gathers the projection to pick its group's K/V and its share of the queries.
    groups, qpg = arch.num_query_groups, arch.heads_per_group
    total = groups * (qpg + 2) * per_head
    if groups % tp == 0 or (tp % groups == 0 and qpg % (tp // groups) == 0 and total % tp == 0):
        return [_even(total, tp, rank, "linear_qkv")]
    raise LayoutError(
        f"{arch.num_attention_heads} heads in {groups} query groups cannot be split over TP={tp}",
        key="num_query_groups",
        fix="use a TP size that divides the query groups, or a multiple of them that divides the heads",
    )


def rank_shape(rule: ParamRule, arch: Arch, full: tuple[int, ...], tp: int, rank: int) -> tuple[int, ...]:
    """The shape TP rank ``rank`` stores for a parameter whose full shape is ``full``."""
    if rule.split is Split.REPLICATED or tp == 1:
        return full
    if rule.split is Split.ROW:
        return (full[0], _even(full[1], tp, rank, rule.template)[1] - _even(full[1], tp, rank, rule.template)[0])
    rows = sum(b - a for a, b in rank_ranges(rule, arch, full[0], tp, rank))
    return (rows, *full[1:])


def merge_tp(
    rule: ParamRule,
    arch: Arch,
    shards: Sequence[Rows],
    *,
    full: tuple[int, ...],
    names: Sequence[str],
    key: str,
    verify: bool = True,
) -> Rows:
    """Reassemble a canonical parameter from its TP shards (``names`` label them in errors)."""
    tp = len(shards)
    for rank, shard in enumerate(shards):
        want = rank_shape(rule, arch, full, tp, rank)
        if shard.shape != want:
            raise ShardMismatchError(
                f"shape {shard.shape} contradicts the args, which give {want} at TP rank {rank} of {tp} "
                f"(full {full}) [{names[rank]}]",
                key=key,
                fix="check the recorded hidden/ffn/head/vocab sizes and parallel sizes against the shards",
            )
    if rule.split is Split.REPLICATED or tp == 1:
        if verify:
            _check_replicas(shards, names, key)
        return shards[0]
    if rule.split is Split.ROW:
        return Rows.hcat([s.tensor() for s in shards])
    segments: list[tuple[int, int, int, int]] = []  # canonical start, stop, rank, local start
    for rank in range(tp):
        local = 0
        for a, b in rank_ranges(rule, arch, full[0], tp, rank):
            segments.append((a, b, rank, local))
            local += b - a
    segments.sort()
    pieces: list[Rows] = []
    covered = 0
    for a, b, rank, local in segments:
        if a != covered:
            raise ShardMismatchError(f"rows {covered}:{a} are held by no rank, or by two", key=key)
        pieces.append(shards[rank].slice(local, local + b - a))
        covered = b
    return Rows.cat(pieces)


def split_tp(rule: ParamRule, arch: Arch, full: Rows, *, tp: int, rank: int) -> Rows:
    """The shard of a canonical parameter that TP rank ``rank`` holds."""
    if rule.split is Split.REPLICATED or tp == 1:
        return full
    if rule.split is Split.ROW:
        lo, hi = _even(full.shape[1], tp, rank, rule.template)
        return full.columns(lo, hi)
    return Rows.cat([full.slice(a, b) for a, b in rank_ranges(rule, arch, full.rows, tp, rank)])


def _check_replicas(shards: Sequence[Rows], names: Sequence[str], key: str) -> None:
    first = shards[0]
    for name, other in zip(names[1:], shards[1:], strict=True):
        if other.shape != first.shape or other.dtype != first.dtype:
            raise ShardMismatchError(
                f"replicated tensor is {tuple(other.shape)} {other.dtype} on {name} "
                f"but {tuple(first.shape)} {first.dtype} on {names[0]}",
                key=key,
                fix="replicated parameters must be identical on every rank",
            )
        if not other.is_meta and not other.equal(first):
            diff = (other.tensor().float() - first.tensor().float()).abs().max().item()
            raise ShardMismatchError(
                f"replicated tensor differs between {names[0]} and {name} (max abs diff {diff:.3g})",
                key=key,
                fix="replicated parameters must be identical on every rank; re-save from a consistent run",
            )
