"""One rank of a launch: runs its jobs (generate a case, forward a checkpoint, read a layout).

Imported by the forkserver that forks the ranks (``mcore_run.py``), so torch and megatron-core
load once per launch, not once per rank. A job is a plain dict (picklable across the launch):

* ``{"kind": "generate", "case": NAME, "out": DIR, "formats": [...]}`` writes ``DIR/NAME``;
* ``{"kind": "forward", "case": NAME, "ckpt": DIR, "out": FILE, "layout": {...}}`` writes FILE;
* ``{"kind": "forward-args", "ckpt": DIR, "eval_set": JSON, "out": FILE, "layout": {...}}`` writes
  FILE for the model the checkpoint's own args describe (``--use-checkpoint-args``);
* ``{"kind": "layout", "ckpt": DIR, "out": FILE}`` writes the checkpoint's saved layout as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import shutil
import uuid
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from megatron.core import parallel_state as ps
from megatron.core.tensor_parallel import random as tp_random
from safetensors.torch import save_file

# isort: split
import mcore_cpu
from mcore_args import args_from_checkpoint, megatron_args, transformer_config, true_vocab_size
from mcore_cases import CASES_BY_NAME, EVAL_IDS, VOCAB_SIZE, Case, Layout, case_padded_vocab_size, layer_pattern
from mcore_ckpt import load, recorded_args, save_legacy, save_torch_dist
from mcore_model import build_chunks, forward_logits, fp32_twin, perturb
from mcore_release import installed


@contextlib.contextmanager
def model_parallel(args: argparse.Namespace) -> Iterator[None]:
    """Megatron-LM's ``initialize_megatron`` model-parallel part, undone on exit."""
    ps.initialize_model_parallel(
        tensor_model_parallel_size=args.tensor_model_parallel_size,
        pipeline_model_parallel_size=args.pipeline_model_parallel_size,
        virtual_pipeline_model_parallel_size=args.virtual_pipeline_model_parallel_size,
        expert_model_parallel_size=args.expert_model_parallel_size,
        expert_tensor_parallel_size=args.expert_tensor_parallel_size,
        distributed_timeout_minutes=args.distributed_timeout_minutes,
    )
    # _set_random_seed: seed + 100 * pp rank (no data_parallel_random_init); the CUDA RNG tracker
    # is the inference one, whose fork() needs no CUDA generator (all weights are redrawn anyway).
    torch.manual_seed(args.seed + 100 * ps.get_pipeline_model_parallel_rank())
    tp_random.initialize_rng_tracker(inference_rng_tracker=True, force_reset=True)
    tp_random.get_cuda_rng_tracker().add("model-parallel-rng", args.seed)
    try:
        yield
        dist.barrier()
    finally:
        ps.destroy_model_parallel()
        _destroy_subgroups()


def _destroy_subgroups() -> None:
    """Destroy every process group but the world.

    ``destroy_model_parallel`` only forgets megatron's groups; each gloo group keeps its worker
    threads, and a launch running many cases would pile up thousands of them.
    """
    world = dist.GroupMember.WORLD
    for pg in list(dist.distributed_c10d._world.pg_map):
        if pg is not world:
            dist.destroy_process_group(pg)


def _is_logits_writer() -> bool:
    """Last pipeline stage, TP rank 0, DP rank 0: holds the gathered logits."""
    return (
        ps.is_pipeline_last_stage(ignore_virtual=True)
        and ps.get_tensor_model_parallel_rank() == 0
        and ps.get_data_parallel_rank() == 0
    )


def _evaluate(args: argparse.Namespace, chunks: list[torch.nn.Module]) -> dict[str, dict[str, torch.Tensor]]:
    """``{file stem: {"seq_i": [T, VOCAB_SIZE] fp32}}``; empty off the writer rank.

    bf16 cases give ``logits`` from the bf16 weights evaluated in float32 and ``logits_bf16``
    from megatron's bf16 forward (upcast by Float16Module).
    """
    runs = {"logits": chunks}
    if args.bf16:
        runs = {"logits": fp32_twin(args, chunks), "logits_bf16": chunks}
    out: dict[str, dict[str, torch.Tensor]] = {}
    for stem, model in runs.items():
        logits = forward_logits(model, EVAL_IDS)
        if logits is not None and _is_logits_writer():
            out[stem] = {f"seq_{i}": x[:, :VOCAB_SIZE].contiguous() for i, x in enumerate(logits)}
    return out


def _case_record(case: Case) -> dict[str, Any]:
    """case.json: the case, its layout, derived sizes, and how it was produced."""
    import megatron.core

    record = {
        "name": case.name,
        "about": case.about,
        "layout": case.layout.__dict__ | {"world": case.layout.world},
        "model": {k: list(v) if isinstance(v, tuple) else v for k, v in case.model.__dict__.items()},
        "moe_layer_pattern": list(layer_pattern(case.model)),
        "params_dtype": case.params_dtype,
        "weights_are_bf16": case.params_dtype == "bfloat16",
        "vocab_size": VOCAB_SIZE,
        "padded_vocab_size": case_padded_vocab_size(case),
        "legacy_args": "dict" if case.legacy_args_as_dict else "argparse.Namespace",
        "logits": "megatron-core forward_only pipeline schedule, float32, padded vocab rows sliced off",
        "megatron_core": megatron.core.__version__,
        "torch": torch.__version__,
    }
    if case.params_dtype == "bfloat16":
        record["logits"] = "bf16 weights evaluated in float32 (logits.safetensors); bf16 forward: logits_bf16"
    if case.model.num_experts:
        record["experts_module"] = "GroupedMLP" if case.model.moe_grouped_gemm else "SequentialMLP"
    return record


def _replace_dir(staging: Path, final: Path) -> None:
    """Move ``staging`` to ``final`` by renames (an existing ``final`` is replaced whole)."""
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _generate(job: dict[str, Any]) -> None:
    """Build, perturb, evaluate and save one case (both formats) into ``out/<case>``."""
    case = CASES_BY_NAME[job["case"]]
    out = Path(job["out"])
    staging = out / f".{case.name}.tmp-{job['token']}"
    rank0 = dist.get_rank() == 0
    if rank0:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    legacy_args = megatron_args(case, "legacy")
    with model_parallel(legacy_args):
        chunks = build_chunks(legacy_args, transformer_config(legacy_args))
        perturb(chunks, case.name)
        dist.barrier()
        for stem, tensors in _evaluate(legacy_args, chunks).items():
            save_file(tensors, staging / f"{stem}.safetensors")
        if "legacy" in job["formats"]:
            save_legacy(staging / "legacy", legacy_args, chunks, args_as_dict=case.legacy_args_as_dict)
        if "torch_dist" in job["formats"]:
            save_torch_dist(staging / "torch_dist", megatron_args(case, "torch_dist"), chunks)
    dist.barrier()
    if rank0:
        (staging / "case.json").write_text(json.dumps(_case_record(case), indent=2) + "\n")
        (staging / "eval_ids.json").write_text(json.dumps({"sequences": [list(s) for s in EVAL_IDS]}) + "\n")
        _replace_dir(staging, out / case.name)
    dist.barrier()


def _layout_of(a: Mapping[str, Any]) -> Layout:
    """The layout recorded in a checkpoint's args."""
    tp, pp, ep = (
        a["tensor_model_parallel_size"],
        a["pipeline_model_parallel_size"],
        a.get("expert_model_parallel_size", 1),
    )
    etp = a.get("expert_tensor_parallel_size") or tp
    if etp != tp:
        raise ValueError(f"expert_tensor_parallel_size {etp} != tensor_model_parallel_size {tp}: not supported here")
    return Layout(tp=tp, pp=pp, ep=ep, vpp=a.get("virtual_pipeline_model_parallel_size"), dp=ep)


def _read_layout(job: dict[str, Any]) -> None:
    """Write the checkpoint's saved layout as JSON (one rank)."""
    layout = _layout_of(recorded_args(Path(job["ckpt"]))[0])
    Path(job["out"]).write_text(json.dumps(layout.__dict__))


def _forward(job: dict[str, Any]) -> None:
    """Load a checkpoint into freshly built chunks at ``job["layout"]`` and write its logits."""
    case = CASES_BY_NAME[job["case"]]
    layout = Layout(**job["layout"])
    args = megatron_args(case, "legacy", layout)
    out = Path(job["out"])
    with model_parallel(args):
        chunks = build_chunks(args, transformer_config(args))
        report = _every_ranks(load(Path(job["ckpt"]), args, chunks))
        for stem, tensors in _evaluate(args, chunks).items():
            if stem == "logits":
                _write_logits(out, job["token"], tensors, report | {"megatron_core": installed().version})
    dist.barrier()


def _write_logits(out: Path, token: str, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """Write ``out`` atomically; metadata values as JSON."""
    tmp = out.with_name(f".{out.name}.tmp-{token}")
    save_file(tensors, tmp, metadata={k: json.dumps(v) for k, v in metadata.items()})
    os.replace(tmp, out)


def _every_ranks(report: dict[str, list[str]]) -> dict[str, list[str]]:
    """What any rank's load skipped: one rank file's defect shows wherever the logits are written."""
    reports: list[dict[str, list[str]] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(reports, report)
    return {k: sorted({name for r in reports if r for name in r[k]}) for k in report}


def _forward_args(job: dict[str, Any]) -> None:
    """Megatron-LM's ``--use-checkpoint-args``: build the model the checkpoint's own args describe
    at ``job["layout"]``, load it, and write the logits of each eval-set sequence by its name.

    Weights stored in bf16 are evaluated in float32 (exactly upcast, as ``generate`` does): the
    logits are the stored model's, not bf16 arithmetic's. The metadata records what a non-strict
    load skipped, where the args were read and what the forward ran in.
    """
    ckpt = Path(job["ckpt"])
    recorded, source = recorded_args(ckpt)
    args = args_from_checkpoint(recorded, Layout(**job["layout"]))
    sequences = json.loads(Path(job["eval_set"]).read_text())["sequences"]
    vocab = true_vocab_size(args) if args.vocab_size is not None else args.padded_vocab_size
    with model_parallel(args):
        chunks = build_chunks(args, transformer_config(args))
        report = _every_ranks(load(ckpt, args, chunks))
        model = fp32_twin(args, chunks) if (args.bf16 or args.fp16) else chunks
        logits = forward_logits(model, [s["input_ids"] for s in sequences])
        if logits is not None and _is_logits_writer():
            tensors = {s["name"]: x[:, :vocab].contiguous() for s, x in zip(sequences, logits, strict=True)}
            metadata = report | {
                "args": source,
                "weights": str(args.params_dtype).removeprefix("torch."),
                "forward": "float32",
                "megatron_core": installed().version,
            }
            _write_logits(Path(job["out"]), job["token"], tensors, metadata)
    dist.barrier()


_JOBS = {"generate": _generate, "forward": _forward, "forward-args": _forward_args, "layout": _read_layout}


def run(rank: int, world: int, port: int, jobs: list[dict[str, Any]], timeout_s: float) -> None:
    """Rank entry point: set up gloo over 127.0.0.1:``port``, run ``jobs`` in order, tear down."""
    warnings.simplefilter("ignore")
    logging.getLogger("megatron").setLevel(logging.ERROR)
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    # One thread per rank: the ranks share the machine's cores, and a fixed thread count keeps
    # float reductions identical between the generating and the verifying launch.
    torch.set_num_threads(1)
    import megatron.core

    if megatron.core.__version__ != installed().version:  # the dist-info and the package disagree
        raise RuntimeError(f"megatron.core {megatron.core.__version__} imported, dist-info says {installed().version}")
    mcore_cpu.install()
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=timeout_s))
    try:
        for job in jobs:
            _JOBS[job["kind"]](job)
        dist.barrier()
    finally:
        dist.destroy_process_group()
