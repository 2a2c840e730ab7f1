"""Read a Megatron checkpoint in the ``torch`` format: one ``model_optim_rng.pt`` per rank.

Every rank file is opened lazily (mmap), only its ``model`` entries are ever touched, and each
canonical parameter is assembled from its shards on request, so memory holds one parameter.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import re
import threading
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..converter._model import Arch, Layout
from ..converter._pages import FileMappings
from ..converter._rows import Rows
from ..converter._sourcebase import InFileMappings
from ..converter._split_rules import (
    IGNORED_SUFFIXES,
    Fused,
    ParamRule,
    Scope,
    Split,
    canonical_keys,
    expected_shape,
    match_local,
    rule_for,
)
from ..converter._tp import merge_tp
from ..errors import LayoutError, MalformedFileError, ShardMismatchError, UnsupportedModelError
from ._args import arch_from_args, layout_from_args
from ._checkpoint_dir import RANK_FILE, CheckpointDir, describe_checkpoint, find_checkpoint, interpret_rank_dirs
from ._rank_state import (
    LEGACY_QKV_ORDERS,
    check_keys,
    flatten_state,
    qkv_rows_from_legacy,
    read_rank_file,
    resolve_args,
    ungroup_experts,
)
from ._safeload import LoadedPickle, Opaque

__all__ = ["MegatronSource", "ungroup_experts"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Staged:
    """One model chunk of one rank file, read but not yet indexed."""

    tp: int
    pp: int
    ep: int
    chunk: int
    file: Path
    items: list[tuple[str, Any]]


def _kind(canonical: str) -> str:
    """A canonical key with its layer and expert numbers dropped."""
    return re.sub(r"\.\d+\.", ".#.", canonical)


@dataclass(frozen=True)
class _Piece:
    tp: int
    pp: int
    ep: int
    tensor: torch.Tensor
    file: Path
    local_key: str


class MegatronSource(InFileMappings):
    """A Megatron ``torch``-format checkpoint as canonical parameters.

    Example:
        >>> src = MegatronSource.open(Path("ckpt"))            # doctest: +SKIP
        >>> src.get("decoder.layers.0.self_attention.linear_qkv.weight").shape  # doctest: +SKIP
    """

    format = "torch"

    def __init__(
        self, ckpt: CheckpointDir, arch: Arch, layout: Layout, args: dict[str, Any], args_file: Path, verify: bool
    ):
        self.ckpt = ckpt
        self.path = ckpt.iter_dir
        self.arch = arch
        self.layout = layout
        self.args = args
        self.args_file = args_file
        self.iteration = ckpt.iteration
        self.verify = verify  # check that replicas agree (every rank read) or trust TP rank 0
        self.checkpoint_version: float | None = None
        self.dialects: set[str] = set()
        self.pages = FileMappings()
        self.layer_offsets: dict[tuple[int, int], int] = {}
        self.layer_counts: dict[tuple[int, int], int] = {}
        self._index: dict[str, list[_Piece]] = {}
        # a background load (``open(background=True)``): its thread, outcome and dtype guesses
        self._cond = threading.Condition()
        self._loader: threading.Thread | None = None
        self._complete = False
        self._cancelled = False
        self._failure: BaseException | None = None
        self._dtype_guess: dict[str, torch.dtype] = {}
        self._tied_check_pending = False

    @classmethod
    def open(
        cls, path: Path, *, vocab_size: int | None = None, verify: bool = True, background: bool = False
    ) -> MegatronSource:
        """Open the checkpoint at ``path`` (its root, an iteration directory or a tracker's dir).

        With ``background``, only the first rank file is read here and the others are read on a
        thread, one pipeline stage after another, while the caller already streams parameters:
        ``get`` waits for the stage that holds its key and raises what reading it raised, and
        ``finish`` waits for the rest and runs the checks that need every rank. Without it, every
        rank file is read and every check made before ``open`` returns.
        """
        ckpt = find_checkpoint(path)
        if ckpt.format != "torch":
            raise LayoutError("a torch_dist checkpoint; open it with TorchDistSource", path=ckpt.iter_dir)
        first = min(ckpt.rank_dirs.items(), key=lambda kv: tuple(abs(n) for n in kv[0]))[1] / RANK_FILE
        loaded = read_rank_file(first) if first.is_file() else None
        raw, args_file = resolve_args(loaded, first if loaded else None, ckpt.arguments_json)
        layout = layout_from_args(raw, source=args_file)
        arch = arch_from_args(raw, source=args_file, vocab_size=vocab_size)
        if arch.num_experts and layout.etp not in (None, 1, layout.tp):
            raise UnsupportedModelError(
                f"expert_tensor_parallel_size {layout.etp} with TP={layout.tp}: the experts are split over "
                "other ranks than the dense layers; only ETP equal to TP, or 1, is read",
                path=args_file,
                key="expert_tensor_parallel_size",
                fix="reshard the checkpoint with ETP=TP (or 1) in Megatron, or save it in torch_dist format",
            )
        src = cls(ckpt, arch, layout, raw, args_file, verify)
        ranks = interpret_rank_dirs(ckpt, layout)
        stages: dict[int, list[tuple[tuple[int, int, int], Path]]] = defaultdict(list)
        for rank, d in sorted(ranks.items(), key=lambda kv: (kv[0][1], kv[0][0], kv[0][2])):
            stages[rank[1]].append((rank, d / RANK_FILE))
        plan = [stages[pp] for pp in sorted(stages)]
        if background and loaded is not None:
            src._guess_dtypes(loaded, first)
            src._loader = threading.Thread(
                target=src._load_in_background, args=(plan, first, loaded), name="vla-megatron-load", daemon=True
            )
            src._loader.start()
        else:
            src._load(plan, first, loaded)
            src._complete = True
        return src

    # -- indexing ---------------------------------------------------------------------------

    def _load_in_background(
        self, plan: list[list[tuple[tuple[int, int, int], Path]]], first: Path, first_loaded: LoadedPickle
    ) -> None:
        try:
            self._load(plan, first, first_loaded)
        except BaseException as e:  # noqa: BLE001 - handed to the thread that waits for a key
            self._failure = e
        finally:
            with self._cond:
                self._complete = True
                self._cond.notify_all()

    def _load(
        self, plan: list[list[tuple[tuple[int, int, int], Path]]], first: Path, first_loaded: LoadedPickle | None
    ) -> None:
        """Read the rank files stage by stage and index their parameters.

        A stage's parameters are published together, once every rank file of that stage is
        read and the global index of its first layer is known: with virtual pipeline stages,
        chunk c of stage p follows every stage's chunk c-1, so those wait for the last stage.
        """
        counts: dict[tuple[int, int], set[int]] = defaultdict(set)  # (chunk, pp) -> local layers
        n_chunks: int | None = None
        waiting: list[_Staged] = []
        offsets: dict[tuple[int, int], int] = {}
        for stage, files in enumerate(plan):
            for (tp, pp, ep), file in files:
                if self._cancelled:
                    return
                loaded = (
                    first_loaded if file == first and first_loaded is not None else read_rank_file(file, first_loaded)
                )
                state = loaded.obj
                if not isinstance(state, Mapping):
                    raise MalformedFileError("not a Megatron checkpoint dict", path=file)
                if self.checkpoint_version is None:
                    self._check_version(state.get("checkpoint_version"), file)
                chunks = self._model_chunks(state, file)
                if n_chunks is None:
                    n_chunks = len(chunks)
                elif len(chunks) != n_chunks:
                    raise LayoutError(
                        f"holds {len(chunks)} model chunks but {plan[0][0][1]} holds {n_chunks}",
                        path=file,
                        key="model0" if len(chunks) > 1 else "model",
                        fix="every rank saves the same number of virtual pipeline chunks",
                    )
                for chunk, model in enumerate(chunks):
                    items = ungroup_experts(
                        ((k, v) for k, v in flatten_state(model) if not k.endswith(IGNORED_SUFFIXES)),
                        n_local=self.arch.num_experts // self.layout.ep,
                        hidden=self.arch.hidden_size,
                        file=file,
                    )
                    for key, _ in items:
                        m = match_local(key)
                        if m is not None and m.layer is not None and (tp, ep) == (0, 0):
                            counts[(chunk, pp)].add(m.layer)
                    waiting.append(_Staged(tp, pp, ep, chunk, file, items))
                # the mappings under this file's tensors (held by ``waiting`` from here on)
                held = (v for s in waiting if s.file == file for _, v in s.items if isinstance(v, torch.Tensor))
                self.pages.register_file(file, held)
            for chunk in range(n_chunks or 0):
                self._check_contiguous(counts, chunk, stage, files[0][1])
            offsets = self._known_offsets(counts, n_chunks or 0, stage + 1, len(plan))
            ready = [s for s in waiting if (s.chunk, s.pp) in offsets]
            waiting = [s for s in waiting if (s.chunk, s.pp) not in offsets]
            self._publish(self._pieces(ready, offsets))
        total = sum(len(v) for v in counts.values())
        if total != self.arch.num_layers:
            raise LayoutError(
                f"the shards hold {total} layers but num_layers is {self.arch.num_layers}",
                path=self.args_file,
                key="num_layers",
                fix="check that every pipeline stage is present and the args belong to this checkpoint",
            )
        self.layer_offsets = offsets  # (chunk, pp) -> global index of the block's first layer
        self.layer_counts = {k: len(v) for k, v in counts.items()}
        self._check_keys()

    @property
    def _legacy_qkv_version(self) -> float | None:
        """The checkpoint_version, if it predates today's fused QKV order (2.0)."""
        version = self.checkpoint_version
        return float(version) if version is not None and float(version) < 2.0 else None

    def _check_version(self, version: Any, file: Path) -> None:
        self.checkpoint_version = version
        if self._legacy_qkv_version is None:
            return
        problem = None
        if self._legacy_qkv_version not in LEGACY_QKV_ORDERS:
            problem = f"checkpoint_version {version} is none Megatron wrote (0, 1.0, 2.0 and later)"
        elif self.arch.num_query_groups != self.arch.num_attention_heads:
            problem = f"checkpoint_version {version} predates grouped-query attention, but the args give it"
        if problem is not None:
            raise LayoutError(
                problem,
                path=file,
                key="checkpoint_version",
                fix="re-save with Megatron >= 2.0, or correct the recorded checkpoint_version or args",
            )

    def _shard_rows(self, rule: ParamRule, tensor: torch.Tensor, *, meta: bool) -> Rows:
        """One rank's shard, its fused QKV rows in today's order if the checkpoint predates it."""
        rows = Rows.of(tensor)
        version = self._legacy_qkv_version
        if rule.fused is Fused.QKV and version is not None and tensor.dim() >= 1:
            heads = self.arch.num_attention_heads // self.layout.tp
            rows = qkv_rows_from_legacy(tensor, version, heads, self.arch.kv_channels)
        return rows.meta() if meta else rows

    def _model_chunks(self, state: Mapping[str, Any], file: Path) -> list[Mapping[str, Any]]:
        if "model" in state:
            return [state["model"]]
        chunks: list[Mapping[str, Any]] = []
        while f"model{len(chunks)}" in state:
            chunks.append(state[f"model{len(chunks)}"])
        if not chunks:
            raise LayoutError("no 'model' entry", path=file, key="model", fix="pass a Megatron training checkpoint")
        return chunks

    @staticmethod
    def _check_contiguous(counts: dict[tuple[int, int], set[int]], chunk: int, pp: int, file: Path) -> None:
        local = counts.get((chunk, pp), set())
        if local != set(range(len(local))):
            raise LayoutError(
                f"pipeline stage {pp} (chunk {chunk}) has layers {sorted(local)}, expected 0..{len(local) - 1}",
                path=file,
                fix="layer indices are local to each stage and must be contiguous",
            )

    @staticmethod
    def _known_offsets(
        counts: dict[tuple[int, int], set[int]], n_chunks: int, n_read: int, n_stages: int
    ) -> dict[tuple[int, int], int]:
        """Global index of the first layer of every (chunk, stage) block whose predecessors are
        read. Virtual pipeline: chunk v of stage p holds the (v * PP + p)-th block of layers."""
        offsets: dict[tuple[int, int], int] = {}
        total = 0
        for chunk in range(n_chunks):
            for pp in range(n_stages):
                if pp >= n_read:
                    return offsets
                offsets[(chunk, pp)] = total
                total += len(counts.get((chunk, pp), ()))
        return offsets

    def _pieces(self, staged: list[_Staged], offsets: dict[tuple[int, int], int]) -> dict[str, list[_Piece]]:
        n_local_experts = self.arch.num_experts // self.layout.ep if self.arch.num_experts else 0
        out: dict[str, list[_Piece]] = defaultdict(list)
        for s in staged:
            for key, value in s.items:
                if value is None or isinstance(value, (io.BytesIO, Opaque)):
                    continue
                m = match_local(key)
                if m is None:
                    raise LayoutError(
                        "unknown key (not a GPT parameter in megatron-core, Transformer Engine or legacy naming)",
                        path=s.file,
                        key=key,
                        fix="remove it, or convert the model with the tool that wrote it",
                    )
                if not isinstance(value, torch.Tensor):
                    raise MalformedFileError(f"value is {type(value).__name__}, not a tensor", path=s.file, key=key)
                self.dialects.add(m.alias.dialect)
                layer = None if m.layer is None else offsets[(s.chunk, s.pp)] + m.layer
                expert = None if m.expert is None else s.ep * n_local_experts + m.expert
                out[m.canonical(layer, expert)].append(_Piece(s.tp, s.pp, s.ep, value, s.file, key))
        return out

    def _publish(self, pieces: dict[str, list[_Piece]]) -> None:
        """Make a stage's parameters visible to ``get``; a parameter is never split over stages."""
        for key, new in pieces.items():
            stages = {p.pp for p in new} | {p.pp for p in self._index.get(key, ())}
            if len(stages) > 1:
                old = self._index[key][0] if key in self._index else new[0]
                other = next(p for p in new if p.pp != old.pp)
                raise LayoutError(
                    f"pipeline stages {old.pp} and {other.pp} both hold this parameter (also in {old.file})",
                    path=other.file,
                    key=other.local_key,
                    fix="each parameter belongs to one pipeline stage; remove the copy from the wrong stage",
                )
        with self._cond:
            for key, new in pieces.items():
                self._index[key] = new
            self._cond.notify_all()

    def _check_keys(self) -> None:
        check_keys(
            set(self._index),
            self.arch,
            args_file=self.args_file,
            where=lambda key: f"first in {self._index[key][0].file}",
        )

    def _guess_dtypes(self, loaded: LoadedPickle, file: Path) -> None:
        """dtype of each kind of parameter in the first rank file (layer and expert numbers
        dropped), so a plan can be made before the other stages are read; ``get`` checks it."""
        state = loaded.obj
        if not isinstance(state, Mapping):
            return
        for model in self._model_chunks(state, file):
            for key, value in flatten_state(model):
                m = match_local(key)
                if m is not None and isinstance(value, torch.Tensor):
                    kind = _kind(m.canonical(m.layer, m.expert))
                    self._dtype_guess.setdefault(kind, value.dtype)
                    self._dtype_guess.setdefault("", value.dtype)

    # -- waiting for a background load --------------------------------------------------------

    def loaded(self, key: str) -> bool:
        """Whether ``key``'s shards are read (always, unless opened with ``background``)."""
        with self._cond:
            return key in self._index or self._complete

    def _wait_for(self, key: str) -> None:
        if self._loader is None:
            return
        with self._cond:
            while key not in self._index and not self._complete:
                self._cond.wait()
        if key not in self._index and self._failure is not None:
            raise self._failure

    def finish(self) -> None:
        """Wait until every rank file is read; raise what reading one raised, and make the checks
        that need every stage (the tied head's copy on the last stage)."""
        if self._loader is not None:
            self._loader.join()
            if self._failure is not None:
                raise self._failure
        if self._tied_check_pending:
            self._check_tied_head(self._assemble("embedding.word_embeddings.weight", meta=False))
            self._tied_check_pending = False

    def close(self) -> None:
        """Stop a background load (after the file being read), wait for its thread, and close the
        descriptors opened to copy from the rank files."""
        self._cancelled = True
        if self._loader is not None:
            self._loader.join()
        self.pages.close()

    # -- access -----------------------------------------------------------------------------

    def keys(self) -> list[str]:
        return canonical_keys(self.arch)

    def shard_keys(self) -> list[tuple[str, str, tuple[int, ...], str]]:
        """(canonical key, split rule, per-rank shape, first local key) for ``inspect``."""
        out = []
        for key in self.keys():
            piece = self._index[key][0]
            rule, _, _ = rule_for(key)
            out.append(
                (
                    key,
                    rule.split.value + ("/" + rule.fused.value if rule.fused.value != "none" else ""),
                    tuple(piece.tensor.shape),
                    piece.local_key,
                )
            )
        return out

    def get(self, key: str, *, meta: bool = False) -> Rows:
        """The full parameter ``key`` (vocabulary stripped to the true size when known).

        ``meta``: shape and dtype only. While a background load has not reached ``key``'s
        stage, that is the shape the args give and the dtype of the same kind of parameter in
        the first rank file (``loaded(key)`` is False then); the real ``get`` checks both.
        """
        if meta and self._dtype_guess and not self.loaded(key):
            return self._expected(key)
        self._wait_for(key)
        merged = self._assemble(key, meta=meta)
        if key == "embedding.word_embeddings.weight" and self.arch.tied and not meta and self.verify:
            if self.loaded("output_layer.weight"):
                self._check_tied_head(merged)
            else:
                self._tied_check_pending = True  # the last stage is still being read: see finish()
        return merged

    def _expected(self, key: str) -> Rows:
        rule, _, _ = rule_for(key)
        dtype = self._dtype_guess.get(_kind(key), self._dtype_guess[""])
        rows = Rows.of(torch.empty(expected_shape(rule, self.arch), dtype=dtype, device="meta"))
        if rule.split is Split.VOCAB and self.arch.vocab_size is not None:
            rows = rows.slice(0, self.arch.vocab_size)
        return rows

    def _assemble(self, key: str, *, meta: bool) -> Rows:
        rule, _, _ = rule_for(key)
        pieces = self._index.get(key, [])
        total = expected_shape(rule, self.arch)
        verify = self.verify and not meta
        expert_tp = self.layout.expert_tp if rule.scope is Scope.EXPERT else self.layout.tp
        by_ep: dict[int, list[_Piece]] = defaultdict(list)
        for p in sorted(pieces, key=lambda p: (p.ep, p.tp)):
            by_ep[p.ep].append(p)
        merged: Rows | None = None
        for ep, group in sorted(by_ep.items()):
            names = [f"{p.file}:{p.local_key}" for p in group]
            shards = [self._shard_rows(rule, p.tensor, meta=meta) for p in group]
            split_rule = rule
            if expert_tp == 1 and rule.scope is Scope.EXPERT and len(shards) > 1:
                split_rule = dataclasses.replace(rule, split=Split.REPLICATED)
            rows = merge_tp(split_rule, self.arch, shards, full=total, names=names, key=key, verify=verify)
            if merged is None:
                merged = rows
            elif not verify:
                break  # trust EP rank 0's copy of a replicated parameter
            elif not merged.equal(rows):
                raise ShardMismatchError(
                    f"replicated over expert-parallel ranks but EP rank {ep} differs from EP rank 0",
                    path=group[0].file,
                    key=group[0].local_key,
                    fix="non-expert parameters must be identical on every EP rank",
                )
            if not meta and ep > 0:
                for s in shards:
                    self.release(s)
        if merged is None:
            raise LayoutError("no shard holds this parameter", path=self.path, key=key)
        if merged.shape != total:
            raise ShardMismatchError(
                f"merged shape {merged.shape} contradicts the args, which give {total}",
                path=pieces[0].file,
                key=pieces[0].local_key,
                fix="check the recorded hyperparameters against the checkpoint",
            )
        if rule.split is Split.VOCAB and self.arch.vocab_size is not None:
            merged = merged.slice(0, self.arch.vocab_size)
        return merged

    def _check_tied_head(self, embedding: Rows) -> None:
        head = "output_layer.weight"
        self._wait_for(head)
        if head not in self._index:
            return
        rows = self._assemble(head, meta=False)
        if not rows.equal(embedding):
            where = self._index[head][0]
            raise ShardMismatchError(
                "the last stage's copy of the tied embedding differs from the first stage's embedding",
                path=where.file,
                key=where.local_key,
                fix="re-sync the tied embedding and output layer before saving",
            )
        self.release(rows)

    def describe(self) -> dict[str, Any]:
        return describe_checkpoint(self)
