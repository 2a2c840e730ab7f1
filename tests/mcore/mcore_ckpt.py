"""Save and load Megatron checkpoints of model chunks, following Megatron-LM core_v0.16.1.

``megatron/training/checkpointing.py``: ``generate_state_dict`` builds the state dict (args,
``checkpoint_version`` 3.0, iteration, ``model`` or ``model0``, ``model1``.., rng state), the
legacy format writes it with ``torch.save`` from every rank whose expert-data-parallel rank is 0,
torch_dist passes the sharded version to ``dist_checkpointing.save``. Where another release's
Megatron-LM differs (the sharded-state-dict metadata, the rng ShardedObject) its record in
``mcore_release`` says so. Runs inside rank processes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from megatron.core import dist_checkpointing
from megatron.core import parallel_state as ps
from megatron.core.dist_checkpointing.mapping import ShardedObject
from megatron.core.dist_checkpointing.serialization import (
    get_default_load_sharded_strategy,
    get_default_save_sharded_strategy,
)
from megatron.core.dist_checkpointing.strategies.fully_parallel import FullyParallelSaveStrategyWrapper
from megatron.core.tensor_parallel import get_cuda_rng_tracker

# isort: split
from mcore_cases import ITERATION
from mcore_model import unwrap
from mcore_release import installed

TRACKER: Final = "latest_checkpointed_iteration.txt"
ARGUMENTS_JSON: Final = "arguments.json"  # beside the rank directories, as some converters write
ITER_DIR: Final = f"iter_{ITERATION:07d}"
RANK_FILE: Final = "model_optim_rng.pt"


def legacy_rank_dir(tp_rank: int, pp_rank: int, ep_rank: int, pp_size: int, ep_size: int) -> str:
    """Megatron-LM's ``get_checkpoint_name`` directory: ``mp_rank_TT[_PPP][_EEE]``.

    >>> legacy_rank_dir(1, 0, 1, pp_size=1, ep_size=2)
    'mp_rank_01_001'
    """
    name = f"mp_rank_{tp_rank:02d}" if pp_size == 1 else f"mp_rank_{tp_rank:02d}_{pp_rank:03d}"
    return name + (f"_{ep_rank:03d}" if ep_size > 1 else "")


def _own_legacy_dir() -> str:
    """This rank's legacy directory name."""
    return legacy_rank_dir(
        ps.get_tensor_model_parallel_rank(),
        ps.get_pipeline_model_parallel_rank(),
        ps.get_expert_model_parallel_rank(),
        ps.get_pipeline_model_parallel_world_size(),
        ps.get_expert_model_parallel_world_size(),
    )


def _rng_state(ckpt_format: str) -> list[dict[str, Any]] | ShardedObject:
    """Megatron-LM's ``get_rng_state`` without ``cuda_rng_state`` (these ranks have no CUDA device)."""
    state = [
        {
            "random_rng_state": random.getstate(),
            "np_rng_state": np.random.get_state(),
            "torch_rng_state": torch.get_rng_state(),
            "rng_tracker_states": get_cuda_rng_tracker().get_states(),
        }
    ]
    if ckpt_format != "torch_dist":
        return state
    pp, tp = ps.get_pipeline_model_parallel_rank(), ps.get_tensor_model_parallel_rank()
    pp_size, tp_size = ps.get_pipeline_model_parallel_world_size(), ps.get_tensor_model_parallel_world_size()
    dp = ps.get_data_parallel_rank(with_context_parallel=True)
    if ps.get_expert_model_parallel_world_size() > 1 and installed().rng_state_by_dp_with_ep:
        dp_size = ps.get_data_parallel_world_size(with_context_parallel=True)
        return ShardedObject("rng_state", state, (pp_size, tp_size, dp_size), (pp, tp, dp), replica_id=0)
    return ShardedObject("rng_state", state, (pp_size, tp_size), (pp, tp), replica_id=dp)


def sharded_metadata() -> dict[str, Any]:
    """``_build_sharded_state_dict_metadata`` for a run without the distributed optimizer.

    0.16.1: ``singleton_local_shards`` False, ``chained_optim_avoid_prefix`` True and the
    ``dp_cp_group``; 0.13.1: empty.
    """
    release = installed()
    metadata = dict(release.sharded_metadata)
    if release.metadata_dp_cp_group:
        metadata["dp_cp_group"] = ps.get_data_parallel_group(with_context_parallel=True)
    return metadata


def _state_dict(
    args: argparse.Namespace | dict[str, Any],
    chunks: list[torch.nn.Module],
    model_sd: Any,
    rng_state: object,
) -> dict[str, Any]:
    """``generate_state_dict`` under ``--no-save-optim`` (no optimizer, no scheduler) plus the FLOP count."""
    sd: dict[str, Any] = {"args": args, "checkpoint_version": 3.0, "iteration": ITERATION}
    for i, chunk in enumerate(chunks):
        sd["model" if len(chunks) == 1 else f"model{i}"] = model_sd(unwrap(chunk))
    if rng_state is not None:
        sd["rng_state"] = rng_state
    sd["num_floating_point_operations_so_far"] = 0
    return sd


def _write_tracker(root: Path) -> None:
    """Rank 0 writes ``latest_checkpointed_iteration.txt`` after every rank saved."""
    torch.distributed.barrier()
    if torch.distributed.get_rank() == 0:
        (root / TRACKER).write_text(str(ITERATION))


def save_legacy(root: Path, args: argparse.Namespace, chunks: list[torch.nn.Module], *, args_as_dict: bool) -> None:
    """Write a legacy (``--ckpt-format torch``) checkpoint of ``chunks`` under ``root``."""
    if ps.get_expert_data_parallel_rank() == 0:
        saved_args: argparse.Namespace | dict[str, Any] = vars(args).copy() if args_as_dict else args
        sd = _state_dict(saved_args, chunks, lambda m: m.state_dict_for_save_checkpoint(), _rng_state("torch"))
        path = root / ITER_DIR / _own_legacy_dir() / RANK_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(sd, path)
    _write_tracker(root)


def save_torch_dist(root: Path, args: argparse.Namespace, chunks: list[torch.nn.Module]) -> None:
    """Write a torch_dist checkpoint of ``chunks`` under ``root`` with ``dist_checkpointing.save``."""
    metadata = sharded_metadata()
    sd = _state_dict(args, chunks, lambda m: m.sharded_state_dict(metadata=metadata), _rng_state("torch_dist"))
    ckpt_dir = root / ITER_DIR
    if torch.distributed.get_rank() == 0:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    torch.distributed.barrier()
    strategy = get_default_save_sharded_strategy(args.ckpt_format)
    if args.ckpt_fully_parallel_save:
        strategy = FullyParallelSaveStrategyWrapper(
            strategy, ps.get_data_parallel_group(with_context_parallel=True), args.ckpt_assume_constant_structure
        )
    dist_checkpointing.save(
        sd,
        str(ckpt_dir),
        strategy,
        async_sharded_save=False,
        validate_access_integrity=True,
        # megatron's _clean_metadata_for_serialization: all but the (unpicklable) dp_cp_group
        content_metadata={k: v for k, v in metadata.items() if k != "dp_cp_group"},
    )
    _write_tracker(root)


def checkpoint_dir(root: Path) -> Path:
    """The iteration directory the tracker file names (``iter_0000010`` or ``release``)."""
    text = (root / TRACKER).read_text().strip()
    return root / ("release" if text == "release" else f"iter_{int(text):07d}")


def checkpoint_format(root: Path) -> str:
    """``torch_dist`` or ``legacy``, detected as Megatron-LM's ``_get_checkpoint_format`` does."""
    ckpt = checkpoint_dir(root)
    if dist_checkpointing.check_is_distributed_checkpoint(str(ckpt)):
        return "torch_dist"
    if any(name.startswith("mp_rank_0") for name in os.listdir(ckpt)):
        return "legacy"
    raise FileNotFoundError(f"{ckpt}: neither a torch_dist checkpoint nor mp_rank_* directories")


def _args_file(root: Path) -> str:
    """Where Megatron-LM reads a checkpoint's args: torch_dist's common.pt, or rank 0's legacy file."""
    if checkpoint_format(root) == "torch_dist":
        return "common.pt"
    return f"{sorted(d for d in os.listdir(checkpoint_dir(root)) if d.startswith('mp_rank_00'))[0]}/{RANK_FILE}"


def saved_args(root: Path) -> argparse.Namespace | dict[str, Any] | None:
    """The ``args`` stored in a checkpoint (rank 0's legacy file, or torch_dist's common.pt)."""
    ckpt = checkpoint_dir(root)
    if checkpoint_format(root) == "torch_dist":
        return dist_checkpointing.load_common_state_dict(str(ckpt)).get("args")
    return torch.load(ckpt / _args_file(root), map_location="cpu", weights_only=False).get("args")


def recorded_args(root: Path) -> tuple[Mapping[str, Any], str]:
    """The args a checkpoint records as a mapping, and where they were read (``file:key (type)``).

    What Megatron-LM reads (:func:`saved_args`) first; where that holds none, ``arguments.json``
    in the iteration directory.
    """
    ckpt = checkpoint_dir(root)
    where = _args_file(root)
    args = saved_args(root)
    if args is None and (ckpt / ARGUMENTS_JSON).is_file():
        return json.loads((ckpt / ARGUMENTS_JSON).read_text()), f"{ckpt.name}/{ARGUMENTS_JSON}"
    if args is None:
        raise KeyError(f"{ckpt}: no args in {where} and no {ARGUMENTS_JSON}")
    return (args if isinstance(args, dict) else vars(args)), f"{ckpt.name}/{where}:args ({type(args).__name__})"


def _load_into(chunk: torch.nn.Module, state: dict[str, Any]) -> dict[str, list[str]]:
    """Megatron-LM's ``load_model_state_dict``: strict, else non-strict; returns what did not match."""
    model = unwrap(chunk)
    try:
        model.load_state_dict(state, strict=True)
        return {"missing_keys": [], "unexpected_keys": []}
    except Exception:  # Megatron-LM falls back to a non-strict load on any error
        result = model.load_state_dict(state, strict=False)
        return {"missing_keys": list(result.missing_keys), "unexpected_keys": list(result.unexpected_keys)}


def load(root: Path, args: argparse.Namespace, chunks: list[torch.nn.Module]) -> dict[str, list[str]]:
    """Load a checkpoint into ``chunks`` (legacy: this rank's file; torch_dist: resharded)."""
    ckpt = checkpoint_dir(root)
    if checkpoint_format(root) == "legacy":
        path = ckpt / _own_legacy_dir() / RANK_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no rank file for this layout ({args.tensor_model_parallel_size=}, "
                f"{args.pipeline_model_parallel_size=}, {args.expert_model_parallel_size=})"
            )
        state = torch.load(path, map_location="cpu", weights_only=False)
    else:
        common = dist_checkpointing.load_common_state_dict(str(ckpt))
        metadata = dist_checkpointing.load_content_metadata(preloaded_state_dict=common) or {}
        if installed().metadata_dp_cp_group:
            metadata["dp_cp_group"] = ps.get_data_parallel_group(with_context_parallel=True)
        sharded = _state_dict(args, chunks, lambda m: m.sharded_state_dict(metadata=metadata), None)
        state = dist_checkpointing.load(
            sharded, str(ckpt), get_default_load_sharded_strategy(str(ckpt)), strict=args.dist_ckpt_strictness
        )
    report: dict[str, list[str]] = {"missing_keys": [], "unexpected_keys": []}
    for i, chunk in enumerate(chunks):
        key = "model" if len(chunks) == 1 else f"model{i}"
        if key not in state:
            raise KeyError(f"{ckpt}: no {key!r} in the state dict of {type(chunk).__name__} chunk {i}")
        for k, v in _load_into(chunk, state[key]).items():
            report[k] += [f"{key}.{name}" for name in v]
    return report
