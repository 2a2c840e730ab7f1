"""Logit parity: the plain-torch reference forward, the sharded forward over torch.distributed
ranks (``python -m vla_reference.parity``), the statistics and tolerances.
"""

from ._forward import reference_logits
from ._sharded import ParallelRunError, plan_ranks, run_ranks, sharded_logits
from ._stats import ParityStats, Tolerance, compare_logits, default_tolerance, format_table

__all__ = [
    "reference_logits",
    "ParallelRunError",
    "plan_ranks",
    "run_ranks",
    "sharded_logits",
    "ParityStats",
    "Tolerance",
    "compare_logits",
    "default_tolerance",
    "format_table",
]
