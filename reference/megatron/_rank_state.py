"""What one rank file holds: its state read safely and flattened, grouped experts as per-expert
views, pre-2.0 QKV orders, the recorded args, the key set checked against them."""

from __future__ import annotations

import argparse
import logging
import re
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import torch

from .._fs import read_json
from ..converter._model import Arch
from ..converter._rows import Rows
from ..converter._split_rules import (
    canonical_keys,
)
from ..errors import LayoutError, MalformedFileError, ShardMismatchError
from ._args import HYPERPARAMETER_ARGS
from ._safeload import LoadedPickle, Opaque, load_pt_mapped

__all__ = ["flatten_state", "ungroup_experts", "read_rank_file", "resolve_args", "check_keys"]

log = logging.getLogger(__name__)


def flatten_state(obj: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Legacy Megatron nests its state dict (language_model -> encoder -> 'layers.0...'); flatten it."""
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from flatten_state(value, name + ".")
        else:
            yield name, value


# Megatron's GroupedMLP (--moe-grouped-gemm without Transformer Engine's per-expert weights)
_GROUPED: Final = re.compile(r"(?P<layer>decoder\.layers\.\d+\.mlp\.experts\.)weight(?P<which>[12])\Z")


def ungroup_experts(
    items: Iterable[tuple[str, Any]], *, n_local: int, hidden: int, file: Path
) -> list[tuple[str, Any]]:
    """``items`` with a GroupedMLP's two matrices rewritten as its local experts' own weights.

    GroupedMLP keeps a layer's local experts in ``weight1`` [hidden, n_local * fc1_rows] and
    ``weight2`` [n_local * fc2_cols, hidden], which its forward views as [n_local, hidden,
    fc1_rows] and [n_local, fc2_cols, hidden] and multiplies untransposed. Expert j's
    ``linear_fc1`` is therefore the transpose of block j of ``weight1`` (on a TP rank:
    [gate_r; up_r], like every column-parallel fc1), and its ``linear_fc2`` the transpose of
    block j of ``weight2``. They become ``local_experts.{j}`` keys: views, nothing copied.

    Raises:
        ShardMismatchError: A matrix that does not split into ``n_local`` blocks of width ``hidden``.
    """
    out: list[tuple[str, Any]] = []
    for key, value in items:
        m = _GROUPED.match(key)
        if m is None:
            out.append((key, value))
            continue
        if not isinstance(value, torch.Tensor):
            raise MalformedFileError(f"value is {type(value).__name__}, not a tensor", path=file, key=key)
        first = m["which"] == "1"
        along = 1 if first else 0  # the experts' axis
        if not (
            n_local
            and value.dim() == 2
            and value.is_contiguous()
            and value.shape[1 - along] == hidden
            and value.shape[along] % n_local == 0
        ):
            raise ShardMismatchError(
                f"grouped expert weights of shape {tuple(value.shape)} do not split into {n_local} local "
                f"experts with hidden size {hidden}",
                path=file,
                key=key,
                fix="check num_experts, expert_model_parallel_size and hidden_size against the checkpoint",
            )
        blocks = value.view(n_local, hidden, -1) if first else value.view(n_local, -1, hidden)
        leaf = "linear_fc1.weight" if first else "linear_fc2.weight"
        out.extend((f"{m['layer']}local_experts.{j}.{leaf}", blocks[j].t()) for j in range(n_local))
    return out


def model_dicts(obj: Any) -> list[dict[str, Any]]:
    """Every dict under a rank file's ``model`` (or ``model0``, ``model1``...) entry."""
    out: list[dict[str, Any]] = []
    if isinstance(obj, Mapping):
        todo = [v for k, v in obj.items() if isinstance(k, str) and re.fullmatch(r"model\d*", k)]
        while todo:
            d = todo.pop()
            if isinstance(d, dict):
                out.append(d)
                todo.extend(v for v in d.values() if isinstance(v, dict))
    return out


def read_rank_file(file: Path, expect: LoadedPickle | None = None) -> LoadedPickle:
    """A rank file with only its model tensors backed by the file (see ``load_pt_mapped``);
    the optimizer state's tensors are never mapped or read. ``expect``:
    another rank file of the checkpoint, whose foreign globals this one is tried with first."""
    return load_pt_mapped(file, model_dicts, expect=None if expect is None else expect.stand_ins)


# Fused QKV rows of one rank before checkpoint_version 2.0, as Megatron's
# fix_query_key_value_ordering reads them (np heads on the rank, hn = kv_channels):
#   0   -> [3, np, hn]: every query head, then every key head, then every value head
#   1.0 -> [np, hn, 3]: q, k and v interleaved row by row within each head
# Today's order is [np, 3, hn] (per head: q rows, k rows, v rows); there was no GQA before 2.0.
LEGACY_QKV_ORDERS: Final = (0.0, 1.0)


def qkv_rows_from_legacy(t: torch.Tensor, version: float, heads: int, head_dim: int) -> Rows:
    """The rank's fused QKV rows in today's ``[np, 3, hn]`` order, as views of ``t``."""
    rest = tuple(t.shape[1:])
    if t.shape[0] != 3 * heads * head_dim:
        return Rows.of(t)  # the shape check after merging names the contradiction
    if version == 0.0:
        grid = t.view(3, heads, head_dim, *rest)
        pieces = [grid[s, h] for h in range(heads) for s in range(3)]
    else:
        grid = t.view(heads, head_dim, 3, *rest)
        pieces = [grid[h, :, s] for h in range(heads) for s in range(3)]
    return Rows((t.shape[0], *rest), t.dtype, tuple(pieces))


def namespace_dict(args: Any) -> dict[str, Any] | None:
    if isinstance(args, (argparse.Namespace, types.SimpleNamespace)):
        return vars(args)
    if isinstance(args, Mapping):
        return dict(args)
    return None


def resolve_args(
    loaded: LoadedPickle | None, pt_path: Path | None, arguments_json: Path | None
) -> tuple[dict[str, Any], Path]:
    """Hyperparameters from ``args`` in the rank file, else from ``arguments.json``.

    ``args`` holding a class outside the allow-list (a Megatron enum such as ``AttnBackend``,
    which recent Megatron always records) is still used, without those fields, when none of
    them is a hyperparameter the converter reads. Otherwise it is set aside in favour of
    ``arguments.json`` with a warning; without one, this fails naming the fields that blocked it.
    """
    blocked = ""
    if loaded is not None and pt_path is not None:
        raw = namespace_dict(loaded.obj.get("args")) if isinstance(loaded.obj, Mapping) else None
        opaque = sorted(k for k, v in (raw or {}).items() if isinstance(v, Opaque))
        if raw is not None and not opaque:
            return raw, pt_path
        if raw is None:
            blocked = f"'args' in {pt_path} is missing or not a Namespace/dict"
        else:
            blocked = (
                f"'args' in {pt_path} holds types outside the allow-list "
                f"({', '.join(loaded.stand_ins)}) in {', '.join(opaque)}"
            )
            needed = sorted(set(opaque) & HYPERPARAMETER_ARGS)
            if not needed:  # recent Megatron always records attention_backend, an enum of its own
                log.info("%s; those fields are not hyperparameters, ignoring them", blocked)
                return {k: v for k, v in raw.items() if k not in opaque}, pt_path
            blocked += f" (needed: {', '.join(needed)})"
    if arguments_json is not None:
        if blocked:
            log.warning("%s; using %s instead", blocked, arguments_json)
        data = read_json(arguments_json)
        if not isinstance(data, Mapping):
            raise MalformedFileError("arguments.json is not an object", path=arguments_json)
        return dict(data), arguments_json
    raise LayoutError(
        (blocked or "no training arguments found") + " and there is no arguments.json",
        path=pt_path,
        key="args",
        fix="save arguments.json beside the shards (Megatron's --save writes it) with the model's hyperparameters",
    )


def check_keys(present: set[str], arch: Arch, *, args_file: Path, where: Callable[[str], str]) -> None:
    """The canonical keys a checkpoint holds are exactly those the args call for (all problems at once).

    ``where(key)`` says where an unexpected key was found. A tied model's head copy is allowed.
    """
    present = set(present)
    if arch.tied:
        present.discard("output_layer.weight")  # the last stage's copy of the tied embedding, checked on read
    expected = set(canonical_keys(arch))
    missing, unexpected = sorted(expected - present), sorted(present - expected)
    if not (missing or unexpected):
        return
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing[:6])}" + (" ..." if len(missing) > 6 else ""))
    if unexpected:
        more = " ..." if len(unexpected) > 6 else ""
        parts.append(f"unexpected {', '.join(unexpected[:6])}{more} ({where(unexpected[0])})")
    raise LayoutError(
        "the shards do not match the recorded arguments: " + "; ".join(parts),
        path=args_file,
        fix="check add_bias_linear, normalization, swiglu, num_experts, moe_layer_freq and "
        "untie_embeddings_and_output_weights against the checkpoint",
    )
