"""Run megatron-core 0.16.1 on CPU ranks: the narrowest patches that get its GPU-only calls past.

None of these changes what a module computes or saves; each replaces a call that needs a CUDA
device (or Transformer Engine, or the grouped_gemm CUDA extension) with its CPU equivalent.
README.md lists them with the reasons. Applied by :func:`install`, once per rank process.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator

import torch


def _cpu_device() -> torch.device:
    """Stand-in for ``torch.cuda.current_device()``: tensors megatron allocates "on the GPU"."""
    return torch.device("cpu")


class _SchedulesTorch:
    """``torch`` as seen by megatron's pipeline schedules: ``torch.zeros(device="cuda")`` lands on CPU."""

    def __getattr__(self, name: str) -> object:
        return getattr(torch, name)

    @staticmethod
    def zeros(*size: object, device: object = None, **kwargs: object) -> torch.Tensor:
        """``torch.zeros`` with ``device="cuda"`` read as the CPU."""
        return torch.zeros(*size, device="cpu" if device == "cuda" else device, **kwargs)  # type: ignore[call-overload]


def _gmm(a: torch.Tensor, b: torch.Tensor, batch_sizes: torch.Tensor, trans_b: bool = False) -> torch.Tensor:
    """grouped_gemm's ``ops.gmm`` in plain torch: rows of ``a`` for expert i times ``b[i]``."""
    out, start = [], 0
    for i, n in enumerate(batch_sizes.tolist()):
        w = b[i].t() if trans_b else b[i]
        out.append(a[start : start + n] @ w)
        start += n
    return torch.cat(out) if out else a.new_zeros(0, b.shape[1] if trans_b else b.shape[2])


@contextlib.contextmanager
def _tensor_cuda_is_identity() -> Iterator[None]:
    """``Tensor.cuda()`` returns the tensor itself while the block runs."""
    original = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.Tensor.cuda = original  # type: ignore[method-assign]


def install() -> None:
    """Patch torch and megatron-core in this process so its CPU ranks run (idempotent)."""
    torch.cuda.current_device = _cpu_device  # type: ignore[assignment]
    torch.cuda.synchronize = lambda *a, **k: None  # type: ignore[assignment]
    # mcore's jit_fuser is torch.compile: Inductor would compile C++ per function (~20 s each on
    # this machine) and round differently from eager; run the same functions eagerly instead.
    from torch import _dynamo

    _dynamo.config.disable = True

    from megatron.core.models.common.language_module import language_module
    from megatron.core.pipeline_parallel import schedules
    from megatron.core.transformer.moe import grouped_gemm_util, moe_utils

    schedules.torch = _SchedulesTorch()  # type: ignore[assignment]
    if not hasattr(moe_utils, "te_general_gemm"):
        moe_utils.te_general_gemm = None  # imported only with Transformer Engine
    if grouped_gemm_util.grouped_gemm is None:
        shim = types.SimpleNamespace(ops=types.SimpleNamespace(gmm=_gmm))
        grouped_gemm_util.grouped_gemm = shim
        grouped_gemm_util.ops = shim.ops

    cls = language_module.LanguageModule
    if not getattr(cls.setup_embeddings_and_output_layer, "_cpu_patched", False):
        original = cls.setup_embeddings_and_output_layer

        def setup_embeddings_and_output_layer(self: object) -> None:
            with _tensor_cuda_is_identity():
                original(self)

        setup_embeddings_and_output_layer._cpu_patched = True  # type: ignore[attr-defined]
        cls.setup_embeddings_and_output_layer = setup_embeddings_and_output_layer  # type: ignore[method-assign]
