"""Compare logits: the statistics a parity verdict rests on, tolerances by dtype, a readable table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import torch

__all__ = ["Tolerance", "ParityStats", "compare_logits", "default_tolerance", "format_table"]


@dataclass(frozen=True)
class Tolerance:
    """Elementwise ``|a - b| <= atol + rtol * |b|``, mean KL(softmax b || softmax a) <= kl, top-1 >= top1.

    Top-1 counts a position as agreeing when the reference's logit for ``a``'s argmax is within
    ``atol + rtol * |max|`` of the reference's maximum (a tie that close may swap between CPUs).
    """

    atol: float
    rtol: float
    kl: float
    top1: float

    def describe(self) -> str:
        return f"atol {self.atol:g}, rtol {self.rtol:g}, KL {self.kl:g}, top-1 >= {self.top1:.1%}"


# Both sides of a parity check compute in float32 whatever the storage dtype, so what differs is
# only the order of float32 accumulation (all-reduce of partial sums vs one matmul): ~1e-5 on
# logits of order 1-10. Reference logits recorded in half precision carry their own rounding.
_BY_DTYPE: Final[dict[torch.dtype, Tolerance]] = {
    torch.float32: Tolerance(atol=1e-4, rtol=1e-4, kl=1e-6, top1=1.0),
    torch.float64: Tolerance(atol=1e-4, rtol=1e-4, kl=1e-6, top1=1.0),
    torch.bfloat16: Tolerance(atol=6e-2, rtol=1.6e-2, kl=1e-3, top1=0.99),
    torch.float16: Tolerance(atol=1e-2, rtol=2e-3, kl=1e-4, top1=0.99),
}


def default_tolerance(dtype: torch.dtype) -> Tolerance:
    """The documented tolerance for references stored in ``dtype``."""
    return _BY_DTYPE.get(dtype, _BY_DTYPE[torch.bfloat16])


@dataclass(frozen=True)
class ParityStats:
    name: str
    tokens: int
    max_abs: float
    max_rel: float
    kl: float
    top1: float
    worst: tuple[int, int]  # (position, vocabulary id) of the largest absolute difference
    within: bool

    def row(self) -> list[str]:
        return [
            self.name,
            str(self.tokens),
            f"{self.max_abs:.3g}",
            f"{self.max_rel:.3g}",
            f"{self.kl:.3g}",
            f"{self.top1:.1%}",
            f"pos {self.worst[0]}, id {self.worst[1]}",
            "ok" if self.within else "OUT",
        ]


def compare_logits(name: str, got: torch.Tensor, want: torch.Tensor, tol: Tolerance) -> ParityStats:
    """Statistics of ``got`` against the reference ``want`` (both [T, V])."""
    if got.shape != want.shape:
        return ParityStats(name, int(want.shape[0]), float("inf"), float("inf"), float("inf"), 0.0, (-1, -1), False)
    a, b = got.double(), want.double()
    diff = (a - b).abs()
    flat = int(diff.argmax())
    worst = divmod(flat, int(diff.shape[-1]))
    rel = diff / b.abs().clamp_min(1e-6)
    logp, logq = torch.log_softmax(b, -1), torch.log_softmax(a, -1)
    kl = float((logp.exp() * (logp - logq)).sum(-1).mean())
    # Top-1 agrees where the reference scores ``got``'s choice within the elementwise tolerance of
    # its own maximum: two tokens that tie that closely may swap on another CPU, and either is right.
    best = b.max(-1).values
    chosen = b.gather(-1, a.argmax(-1, keepdim=True)).squeeze(-1)
    top1 = float((best - chosen <= tol.atol + tol.rtol * best.abs()).double().mean())
    within = bool((diff <= tol.atol + tol.rtol * b.abs()).all()) and kl <= tol.kl and top1 >= tol.top1
    return ParityStats(name, int(b.shape[0]), float(diff.max()), float(rel.max()), kl, top1, worst, within)


def format_table(stats: Sequence[ParityStats]) -> str:
    head = ["sequence", "tokens", "max abs", "max rel", "KL", "top-1", "worst", ""]
    rows = [head] + [s.row() for s in stats]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)
