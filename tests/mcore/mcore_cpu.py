"""Run megatron-core on CPU ranks: the narrowest patches that get its GPU-only calls past.

None of these changes what a module computes or saves; each replaces a call that needs a CUDA
device (or Transformer Engine, or the grouped_gemm CUDA extension) with its CPU equivalent.
README.md lists them with the reasons; those only a release needs are switched on by its record
in ``mcore_release``. Applied by :func:`install`, once per rank process.
"""

from __future__ import annotations

import contextlib
import functools
import types
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

# isort: split
from mcore_release import installed


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


class _NumpyWithProduct:
    """``numpy`` as seen by 0.13's ``exchange_utils``: ``np.product`` (gone in NumPy 2) is ``np.prod``."""

    product = staticmethod(np.prod)

    def __getattr__(self, name: str) -> object:
        return getattr(np, name)


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


def _with_tensor_cuda_identity(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` run with ``Tensor.cuda()`` the identity (marked, so that it wraps once)."""
    if getattr(fn, "_cpu_patched", False):
        return fn

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with _tensor_cuda_is_identity():
            return fn(*args, **kwargs)

    wrapped._cpu_patched = True  # type: ignore[attr-defined]
    return wrapped


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
    release = installed()
    if release.schedules_call_tensor_cuda:
        # 0.13's pipelined schedules count tokens in torch.tensor(0).cuda(); get_forward_backward_func
        # looks them up in the module, so the wrapped ones are what it returns
        for name in (
            "forward_backward_pipelining_with_interleaving",
            "forward_backward_pipelining_without_interleaving",
        ):
            setattr(schedules, name, _with_tensor_cuda_identity(getattr(schedules, name)))
    if release.uses_np_product:
        from megatron.core.dist_checkpointing import exchange_utils

        exchange_utils.np = _NumpyWithProduct()  # type: ignore[assignment]
    if not hasattr(moe_utils, "te_general_gemm"):
        moe_utils.te_general_gemm = None  # imported only with Transformer Engine
    if grouped_gemm_util.grouped_gemm is None:
        shim = types.SimpleNamespace(ops=types.SimpleNamespace(gmm=_gmm))
        grouped_gemm_util.grouped_gemm = shim
        grouped_gemm_util.ops = shim.ops

    cls = language_module.LanguageModule
    cls.setup_embeddings_and_output_layer = _with_tensor_cuda_identity(cls.setup_embeddings_and_output_layer)  # type: ignore[method-assign]
