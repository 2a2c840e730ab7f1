"""A sharded forward pass: the Megatron model run straight from its shards as real ranks.

Every rank (TP x PP x EP) loads only its own ``model_optim_rng.pt`` and computes what Megatron's
parallel layers compute: column- and row-parallel linears with their all-reduces, a
vocabulary-parallel embedding and output layer (logits all-gathered), pipeline stages passing
activations with send/recv, and experts on their expert-parallel ranks. Collectives run on
``torch.distributed``: gloo on CPU, NCCL when CUDA is there. Nothing here reads merged weights
or uses transformers.

Launch in-process for tests and the conformance suite (:func:`sharded_logits`), or at scale
under torchrun::

    torchrun --nproc-per-node 8 -m vla_reference.parity CKPT --eval-set eval_set.json --out logits.safetensors
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..converter._model import Arch, Layout
from ..converter._rows import Rows
from ..converter._split_rules import IGNORED_SUFFIXES, match_local
from ..errors import ReleaseError
from ..hf._safetensors import SafetensorsFile, header_for, write_rows
from ..megatron._legacy import MegatronSource
from ..megatron._rank_state import flatten_state, ungroup_experts
from ..megatron._safeload import Opaque, load_pt
from ._forward import attention, mlp_act, moe, norm, qk_norm, rope_cos_sin, shared_expert

__all__ = ["RankPlan", "Plan", "plan_ranks", "sharded_logits", "run_ranks", "ParallelRunError", "main"]


class ParallelRunError(ReleaseError):
    """A rank crashed, hung past the time bound, or could not start."""


@dataclass(frozen=True)
class RankPlan:
    """What one rank needs: its file, its coordinates and the global layer offset of each chunk."""

    rank: int
    tp: int
    pp: int
    ep: int
    file: str
    chunk_offsets: tuple[int, ...]  # chunk index -> global index of its first layer


@dataclass(frozen=True)
class Plan:
    arch: dict[str, Any]
    layout: Layout
    ranks: tuple[RankPlan, ...]
    blocks: tuple[tuple[int, int, int, int], ...]  # (first layer, n layers, stage, chunk) in forward order

    def arch_obj(self) -> Arch:
        d = dict(self.arch)
        d["moe_layers"] = tuple(d["moe_layers"])
        d["params_dtype"] = getattr(torch, d["params_dtype"])
        return Arch(**d)


def _rank_id(tp: int, pp: int, ep: int, layout: Layout) -> int:
    return (pp * layout.ep + ep) * layout.tp + tp


def plan_ranks(src: MegatronSource) -> Plan:
    """Assign every rank file to a process and order the pipeline blocks (virtual stages too)."""
    layout = src.layout
    if layout.etp is not None and layout.etp != layout.tp:
        raise ParallelRunError("expert tensor parallel size different from TP is not run", path=src.path)
    files: dict[tuple[int, int, int], str] = {}
    for pieces in src._index.values():
        for p in pieces:
            files[(p.tp, p.pp, p.ep)] = str(p.file)
    offsets = src.layer_offsets  # (chunk, pp) -> first global layer
    sizes = src.layer_counts
    blocks = tuple(sorted((offsets[(c, p)], sizes[(c, p)], p, c) for (c, p) in offsets))
    n_chunks = 1 + max(c for c, _ in offsets)
    ranks = []
    for (tp, pp, ep), f in sorted(files.items()):
        chunk_offsets = tuple(offsets.get((c, pp), 0) for c in range(n_chunks))
        ranks.append(RankPlan(_rank_id(tp, pp, ep, layout), tp, pp, ep, f, chunk_offsets))
    arch = dataclasses.asdict(src.arch)
    arch["params_dtype"] = str(src.arch.params_dtype).removeprefix("torch.")
    return Plan(arch, layout, tuple(sorted(ranks, key=lambda r: r.rank)), blocks)


# -- the rank's side -----------------------------------------------------------------------


class _Groups:
    def __init__(self, layout: Layout, me: RankPlan) -> None:
        self.tp: Any = None
        self.stage: Any = None
        # every rank must create every group, in the same order
        for pp in range(layout.pp):
            for ep in range(layout.ep):
                ranks = [_rank_id(t, pp, ep, layout) for t in range(layout.tp)]
                g = dist.new_group(ranks)
                if (pp, ep) == (me.pp, me.ep):
                    self.tp = g
            ranks = [_rank_id(t, pp, e, layout) for e in range(layout.ep) for t in range(layout.tp)]
            g = dist.new_group(ranks)
            if pp == me.pp:
                self.stage = g


def _load_rank(me: RankPlan, n_local_experts: int, hidden: int, device: torch.device) -> dict[str, torch.Tensor]:
    """This rank's shard of every parameter, by canonical name (global layer/expert index), fp32."""
    state = load_pt(Path(me.file)).obj
    models = [state["model"]] if "model" in state else [state[f"model{i}"] for i in range(len(me.chunk_offsets))]
    out: dict[str, torch.Tensor] = {}
    for chunk, model in enumerate(models):
        grouped = ungroup_experts(flatten_state(model), n_local=n_local_experts, hidden=hidden, file=Path(me.file))
        for key, value in grouped:
            if key.endswith(IGNORED_SUFFIXES) or value is None or isinstance(value, Opaque):
                continue
            m = match_local(key)
            if m is None or not isinstance(value, torch.Tensor):
                continue
            layer = None if m.layer is None else me.chunk_offsets[chunk] + m.layer
            expert = None if m.expert is None else me.ep * n_local_experts + m.expert
            out[m.canonical(layer, expert)] = value.to(device=device, dtype=torch.float32)
    return out


class _Rank:
    def __init__(self, plan: Plan, me: RankPlan, device: torch.device) -> None:
        self.arch = plan.arch_obj()
        self.layout = plan.layout
        self.me = me
        self.device = device
        self.n_local = self.arch.num_experts // self.layout.ep if self.arch.num_experts else 0
        self.w = _load_rank(me, self.n_local, self.arch.hidden_size, device)
        self.groups = _Groups(self.layout, me)
        self.blocks = plan.blocks

    def get(self, key: str) -> torch.Tensor:
        return self.w[key]

    def _allreduce(self, x: torch.Tensor, group: Any) -> torch.Tensor:
        dist.all_reduce(x, group=group)
        return x

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        table = self.get("embedding.word_embeddings.weight")
        start = self.me.tp * table.shape[0]
        local = ids - start
        inside = (local >= 0) & (local < table.shape[0])
        x = F.embedding(local.clamp(0, table.shape[0] - 1), table) * inside[..., None]
        x = self._allreduce(x, self.groups.tp)
        if self.arch.position_embedding_type == "learned_absolute":
            x = x + self.get("embedding.position_embeddings.weight")[: ids.shape[1]][None]
        return x

    def _norm(self, prefix: str, x: torch.Tensor) -> torch.Tensor:
        bias = self.w.get(prefix + ".bias") if self.arch.has_norm_bias else None
        return norm(self.arch, x, self.get(prefix + ".weight"), bias)

    def layer(self, i: int, x: torch.Tensor, cos_sin: Any) -> torch.Tensor:
        a, p, w = self.arch, f"decoder.layers.{i}.", self.w
        h = self._norm(p + "input_layernorm", x)
        qkv = F.linear(h, w[p + "self_attention.linear_qkv.weight"], w.get(p + "self_attention.linear_qkv.bias"))
        share = max(self.layout.tp // a.num_query_groups, 1)
        if share > 1:
            qkv = self._own_group(qkv, share)
        norms = qk_norm(a, self.get, p + "self_attention.")
        ctx = attention(a, qkv, cos_sin, heads_per_group=a.heads_per_group // share, qk_norm=norms)
        out = self._allreduce(F.linear(ctx, w[p + "self_attention.linear_proj.weight"]), self.groups.tp)
        if a.add_bias_linear:
            out = out + w[p + "self_attention.linear_proj.bias"]
        x = x + out
        h = self._norm(p + "pre_mlp_layernorm", x)
        if a.is_moe_layer(i):
            experts = range(self.me.ep * self.n_local, (self.me.ep + 1) * self.n_local)
            y = moe(a, self._expert_getter(), p + "mlp.", h, experts)
            if a.moe_shared_expert_intermediate_size and self.me.ep == 0:
                # split over TP, replicated over EP: the stage's sum counts EP rank 0's partials only
                y = y + shared_expert(a, self.get, p + "mlp.", h)
            return x + self._allreduce(y, self.groups.stage)
        act = mlp_act(a, F.linear(h, w[p + "mlp.linear_fc1.weight"], w.get(p + "mlp.linear_fc1.bias")))
        y = self._allreduce(F.linear(act, w[p + "mlp.linear_fc2.weight"]), self.groups.tp)
        if a.add_bias_linear:
            y = y + w[p + "mlp.linear_fc2.bias"]
        return x + y

    def _own_group(self, qkv: torch.Tensor, share: int) -> torch.Tensor:
        """With fewer query groups than TP ranks, each rank's rows are 1/share of one group: gather
        the projection, keep this rank's group and its share of the group's query heads:
        ``[q_slice, k, v]`` (as megatron-core's get_query_key_value_tensors does)."""
        a, d = self.arch, self.arch.kv_channels
        parts = [torch.empty_like(qkv) for _ in range(self.layout.tp)]
        dist.all_gather(parts, qkv.contiguous(), group=self.groups.tp)
        group, j = divmod(self.me.tp, share)
        width = (a.heads_per_group + 2) * d
        block = torch.cat(parts, dim=-1)[..., group * width : (group + 1) * width]
        q = a.heads_per_group // share * d
        return torch.cat([block[..., j * q : (j + 1) * q], block[..., a.heads_per_group * d :]], dim=-1)

    def _expert_getter(self) -> Callable[[str], torch.Tensor]:
        # fc2 partial sums are all-reduced over TP: its (replicated) bias is added once, on TP rank 0
        def get(key: str) -> torch.Tensor:
            t = self.w[key]
            if key.endswith("linear_fc2.bias") and self.me.tp != 0:
                return torch.zeros_like(t)
            return t

        return get

    def head(self, x: torch.Tensor) -> torch.Tensor:
        x = self._norm("decoder.final_layernorm", x)
        weight = self.w.get("output_layer.weight")
        if weight is None:  # tied, PP=1: the embedding itself
            weight = self.get("embedding.word_embeddings.weight")
        local = F.linear(x, weight).contiguous()
        parts = [torch.empty_like(local) for _ in range(self.layout.tp)]
        dist.all_gather(parts, local, group=self.groups.tp)
        logits = torch.cat(parts, dim=-1)
        return logits[..., : self.arch.rows_vocab]

    def forward(self, ids: torch.Tensor) -> torch.Tensor | None:
        """Run one sequence through the pipeline; the last stage returns the logits."""
        cos_sin = None
        if self.arch.position_embedding_type == "rope":
            cos, sin = rope_cos_sin(self.arch, torch.arange(ids.shape[1]))
            cos_sin = (cos.to(self.device), sin.to(self.device))
        shape = (ids.shape[0], ids.shape[1], self.arch.hidden_size)
        x: torch.Tensor | None = None
        peer = lambda stage: _rank_id(self.me.tp, stage, self.me.ep, self.layout)  # noqa: E731
        for n, (first, count, stage, _chunk) in enumerate(self.blocks):
            if stage != self.me.pp:
                continue
            if n == 0:
                x = self.embed(ids)
            else:
                x = torch.empty(shape, device=self.device)
                dist.recv(x, src=peer(self.blocks[n - 1][2]))
            for i in range(first, first + count):
                x = self.layer(i, x, cos_sin)
            if n + 1 < len(self.blocks):
                dist.send(x.contiguous(), dst=peer(self.blocks[n + 1][2]))
            else:
                return self.head(x)
        return None


def _worker(plan: Plan, me: RankPlan, init: str, sequences: list[list[int]], out_dir: str, timeout_s: float) -> None:
    try:
        cuda = torch.cuda.is_available()
        backend = "nccl" if cuda else "gloo"
        device = torch.device(f"cuda:{me.rank % torch.cuda.device_count()}") if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(device)
        torch.set_num_threads(1)
        dist.init_process_group(
            backend, init_method=init, rank=me.rank, world_size=len(plan.ranks), timeout=timedelta(seconds=timeout_s)
        )
        rank = _Rank(plan, me, device)
        results = []
        with torch.no_grad():
            for ids in sequences:
                results.append(rank.forward(torch.tensor([ids], device=device)))
        dist.barrier()
        if me.tp == 0 and me.ep == 0 and results and results[0] is not None:
            _save_logits(Path(out_dir) / "logits.safetensors", [r[0].cpu() for r in results if r is not None])
        dist.destroy_process_group()
    except BaseException:
        (Path(out_dir) / f"rank{me.rank}.err").write_text(traceback.format_exc())
        os._exit(1)


def _save_logits(path: Path, logits: list[torch.Tensor]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        f.write(header_for([(f"seq_{i}", tuple(t.shape), t.dtype) for i, t in enumerate(logits)], {}))
        for t in logits:
            write_rows(f, Rows.of(t.contiguous()))
    tmp.rename(path)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_CTX: Any = None


def _context() -> Any:
    """A forkserver that has imported torch once: ranks start in milliseconds, from a clean process."""
    global _CTX
    if _CTX is None:
        _CTX = mp.get_context("forkserver")
        _CTX.set_forkserver_preload(["torch", "torch.distributed", "vla_reference.parity._sharded"])
    return _CTX


def sharded_logits(
    src: MegatronSource, sequences: Sequence[Sequence[int]], *, timeout_s: float = 120.0
) -> list[torch.Tensor]:
    """Logits [T, vocab] per sequence, computed by TP x PP x EP processes over the shards.

    Raises ParallelRunError naming the rank if one crashes or the run exceeds ``timeout_s``;
    no process outlives the call.

    Example:
        >>> logits = sharded_logits(MegatronSource.open(Path("ckpt")), [[1, 2, 3]])  # doctest: +SKIP
    """
    return run_ranks(plan_ranks(src), sequences, timeout_s=timeout_s, path=src.path)


def run_ranks(
    plan: Plan,
    sequences: Sequence[Sequence[int]],
    *,
    timeout_s: float,
    path: Path,
    target: Callable[..., None] | None = None,
) -> list[torch.Tensor]:
    """Start one process per rank of ``plan`` (``target``, default the real worker) under a time bound."""
    target = target or _worker
    ctx = _context()
    init = f"tcp://127.0.0.1:{_free_port()}"
    with tempfile.TemporaryDirectory(prefix="vla-parallel-") as out:
        procs = [
            ctx.Process(target=target, args=(plan, me, init, [list(s) for s in sequences], out, timeout_s), daemon=True)
            for me in plan.ranks
        ]
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout_s
        try:
            pending = {p.sentinel: p for p in procs}
            while pending and time.monotonic() < deadline:
                for sentinel in mp_connection.wait(list(pending), timeout=max(deadline - time.monotonic(), 0)):
                    proc = pending.pop(sentinel)  # type: ignore[call-overload]
                    proc.join()
                    if proc.exitcode != 0:  # fail fast: its peers would only wait for it until the bound
                        pending.clear()
                        break
        finally:
            hung = [me for me, p in zip(plan.ranks, procs, strict=True) if p.is_alive()]
            for p in procs:
                if p.is_alive():
                    p.kill()
            for p in procs:
                p.join(5)
        # the first rank to fail is the cause; the others then lose their peers
        errors = sorted(Path(out).glob("rank*.err"), key=lambda f: (f.stat().st_mtime_ns, f.name))
        if errors:
            first = errors[0]
            rank = int(first.stem.removeprefix("rank"))
            me = plan.ranks[rank]
            last = first.read_text().strip().splitlines()[-1]
            others = f" ({len(errors) - 1} other ranks failed after it)" if len(errors) > 1 else ""
            raise ParallelRunError(
                f"rank {rank} (TP={me.tp} PP={me.pp} EP={me.ep}) failed: {last}{others}",
                path=Path(me.file),
                fix="the shard this rank loads may be malformed; rerun `vla-release inspect` on the checkpoint",
            )
        if hung:
            names = ", ".join(f"{m.rank} (TP={m.tp} PP={m.pp} EP={m.ep})" for m in hung)
            raise ParallelRunError(f"ranks {names} did not finish within {timeout_s:.0f} s; killed", path=path)
        bad = [(me, p.exitcode) for me, p in zip(plan.ranks, procs, strict=True) if p.exitcode != 0]
        if bad:
            me, code = bad[0]
            raise ParallelRunError(
                f"rank {me.rank} (TP={me.tp} PP={me.pp} EP={me.ep}) exited with {code}", path=Path(me.file)
            )
        result = SafetensorsFile(Path(out) / "logits.safetensors")
        return [result.tensor(f"seq_{i}").clone() for i in range(len(sequences))]


def main(argv: Sequence[str] | None = None) -> int:
    """Under torchrun: each process runs one rank (env:// rendezvous); rank 0 of the last stage writes."""
    p = argparse.ArgumentParser(prog="python -m vla_reference.parity", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--eval-set", type=Path, required=True, help="eval_set.json with sequences of input_ids")
    p.add_argument("--out", type=Path, required=True, help="safetensors file for the logits")
    p.add_argument("--timeout", type=float, default=600.0)
    args = p.parse_args(argv)
    src = MegatronSource.open(args.checkpoint, verify=False)
    sequences = [s["input_ids"] for s in json.loads(args.eval_set.read_text())["sequences"]]
    if "RANK" not in os.environ:  # not under torchrun: start the ranks ourselves
        _save_logits(args.out, sharded_logits(src, sequences, timeout_s=args.timeout))
        return 0
    plan = plan_ranks(src)
    rank = int(os.environ["RANK"])
    if int(os.environ["WORLD_SIZE"]) != len(plan.ranks):
        print(f"need {len(plan.ranks)} processes for {plan.layout.describe()}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as out:
        _worker(plan, plan.ranks[rank], "env://", sequences, out, args.timeout)
        produced = Path(out) / "logits.safetensors"
        if produced.is_file():
            args.out.write_bytes(produced.read_bytes())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
