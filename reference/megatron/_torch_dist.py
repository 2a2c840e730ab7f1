"""Read a Megatron checkpoint in the ``torch_dist`` format (PyTorch Distributed Checkpoint files).

An iteration directory holds ``metadata.json`` (``{"sharded_backend": "torch_dist", ...}``),
``.metadata`` (DCP's pickled index: every tensor's global shape and where its chunks lie),
``__<rank>_<k>.distcp`` (the bytes) and, in checkpoints written before mid-2026, ``common.pt``
(``args``, ``iteration``, ``checkpoint_version``). Newer checkpoints keep that dict as the object
``common_state`` inside the ``.distcp`` files instead.

Tensors are stored *global*, under megatron-core names without a ``model.`` prefix::

    decoder.layers.self_attention.linear_qkv.weight          [L, qkv, h]     homogeneous block
    decoder.layers.3.self_attention.linear_qkv.weight        [qkv, h]        non-homogeneous block
    decoder.layers.mlp.experts.experts.linear_fc1.weight     [L, E, 2F, h]
    decoder.layers.3.mlp.experts.experts.linear_fc1.weight   [E, 2F, h]
    decoder.layers.3.mlp.linear_fc1.weight_w / weight_v      [F, h]          singleton_local_shards

Nothing here runs code from the checkpoint: ``.metadata`` is unpickled against an allow-list of
DCP's own classes, objects are read as raw bytes (DCP's default planner would
``torch.load(weights_only=False)`` them) and ``common_state`` is then loaded like a ``.pt``
file. Each canonical parameter is read alone, from the chunks overlapping its layer and expert
only; optimizer state, kept in the same files, is never read.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import torch
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    ChunkStorageMetadata,
    Metadata,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import (
    ReadItem,
)
from torch.distributed.checkpoint.planner_helpers import create_read_items_for_chunk_list

from ..converter._model import Arch, Layout
from ..converter._rows import Rows
from ..converter._sourcebase import OwnedMemory
from ..converter._split_rules import (
    IGNORED_SUFFIXES,
    Fused,
    Split,
    canonical_keys,
    expected_shape,
    match_local,
    rule_for,
)
from ..errors import LayoutError, MalformedFileError, ShardMismatchError
from ._args import arch_from_args, layout_from_args
from ._checkpoint_dir import CheckpointDir, describe_checkpoint, find_checkpoint
from ._dcp_files import (
    CONFIG_FILE,
    METADATA_FILE,
    OPTIMIZER_PREFIX,
    DcpReader,
    PlannedReads,
    boxes_overlap,
    check_chunks,
    check_config,
    check_storage,
    never_read,
    read_common,
    run_reads,
)
from ._dcp_metadata import read_dcp_metadata
from ._rank_state import check_keys, resolve_args

__all__ = ["TorchDistSource", "read_dcp_metadata"]

_LAYERS: Final = "decoder.layers."
_EXPERTS: Final = "mlp.experts.experts."
_LOCAL_EXPERT: Final = "mlp.experts.local_experts.{expert}."
# singleton_local_shards: SwiGLU fc1 stored as two tensors, [gate; up] = [_w; _v]
_HALVES: Final[Mapping[str, int]] = {"_w": 0, "_v": 1}


@dataclass(frozen=True)
class _Part:
    """Where a canonical parameter (or one SwiGLU half of it) lies in a stored tensor."""

    dist_key: str
    index: tuple[int, ...]  # positions on the stored tensor's leading (layer, expert) axes
    half: int | None  # singleton_local_shards: 0 gate, 1 up


@dataclass(frozen=True)
class _Stored:
    """A stored key read as a local-spec name: leading axes, indices in the name, SwiGLU half."""

    local: str  # with "{layer}"/"{expert}" where the tensor has an axis instead of an index
    axes: tuple[str, ...]
    layer: int | None
    expert: int | None
    half: int | None

    def probe(self) -> str:
        """The local name with the axis placeholders at 0, for matching against the alias table."""
        return self.local.replace("{layer}", str(self.layer or 0)).replace("{expert}", str(self.expert or 0))


def _parse_key(key: str) -> _Stored:
    """Read a torch_dist key: an index missing from the name is a leading axis of the tensor."""
    half = None
    for suffix, which in _HALVES.items():
        if key.endswith(suffix) and key[: -len(suffix)].endswith((".weight", ".bias")):
            key, half = key[: -len(suffix)], which
    if not key.startswith(_LAYERS):
        return _Stored(key, (), None, None, half)
    axes: list[str] = []
    head, _, tail = key[len(_LAYERS) :].partition(".")
    layer = int(head) if head.isdigit() else None
    if layer is None:
        axes.append("layer")
        tail = key[len(_LAYERS) :]
    expert = None
    if tail.startswith(_EXPERTS):
        head, _, rest = tail[len(_EXPERTS) :].partition(".")
        expert = int(head) if head.isdigit() else None
        if expert is None:
            axes.append("expert")
            rest = tail[len(_EXPERTS) :]
        tail = _LOCAL_EXPERT + rest
    return _Stored(_LAYERS + "{layer}." + tail, tuple(axes), layer, expert, half)


class TorchDistSource(OwnedMemory):
    """A Megatron ``torch_dist`` checkpoint as canonical parameters.

    Presents the same interface as :class:`~vla_reference.megatron.MegatronSource`.

    Example:
        >>> src = TorchDistSource.open(Path("ckpt"), vocab_size=50257)        # doctest: +SKIP
        >>> src.get("decoder.layers.0.self_attention.linear_qkv.weight").shape  # doctest: +SKIP
    """

    format = "torch_dist"

    def __init__(
        self,
        ckpt: CheckpointDir,
        metadata: Metadata,
        arch: Arch,
        layout: Layout,
        args: dict[str, Any],
        args_file: Path,
        checkpoint_version: float | None,
    ) -> None:
        self.ckpt = ckpt
        self.path = ckpt.iter_dir
        self.metadata = metadata
        self.arch = arch
        self.layout = layout
        self.args = args
        self.args_file = args_file
        self.iteration = ckpt.iteration
        self.checkpoint_version = checkpoint_version
        self.dialects: set[str] = set()
        self._reader = DcpReader(ckpt.iter_dir, metadata)
        self._index: dict[str, list[_Part]] = {}
        self._tensors: dict[str, TensorStorageMetadata] = {}  # stored model tensors by key

    @classmethod
    def open(cls, path: Path, *, vocab_size: int | None = None) -> TorchDistSource:
        """Open ``path`` (a checkpoint root with its tracker, or an iteration directory).

        Raises:
            LayoutError: Not a torch_dist checkpoint, or its tensors do not match its arguments.
            UnsafeCheckpointError: ``.metadata`` or the common state would run code.
            MalformedFileError: A file is truncated or corrupt.
            ShardMismatchError: A stored shape contradicts the arguments.
        """
        ckpt = find_checkpoint(Path(path))
        if ckpt.format != "torch_dist":
            raise LayoutError("a torch-format checkpoint; open it with MegatronSource", path=ckpt.iter_dir)
        check_config(ckpt.iter_dir / CONFIG_FILE)
        metadata_file = ckpt.iter_dir / METADATA_FILE
        if not metadata_file.is_file():
            raise LayoutError(
                f"no {METADATA_FILE} beside {CONFIG_FILE}",
                path=ckpt.iter_dir,
                fix="copy the whole iteration directory, hidden files included",
            )
        metadata = read_dcp_metadata(metadata_file)
        check_storage(ckpt.iter_dir, metadata)
        common, common_file = read_common(ckpt.iter_dir, metadata)
        raw, args_file = resolve_args(common, common_file, ckpt.arguments_json)
        layout = layout_from_args(raw, source=args_file)
        arch = arch_from_args(raw, source=args_file, vocab_size=vocab_size)
        version = common.obj.get("checkpoint_version") if common is not None else None
        src = cls(ckpt, metadata, arch, layout, raw, args_file, version)
        src._index_keys()
        return src

    # -- indexing ---------------------------------------------------------------------------

    def _index_keys(self) -> None:
        md_file = self.path / METADATA_FILE
        for key, entry in sorted(self.metadata.state_dict_metadata.items()):
            if key.startswith(OPTIMIZER_PREFIX) or isinstance(entry, BytesStorageMetadata):
                continue  # optimizer state; objects (rng_state, common_state, _extra_state)
            if key.endswith(IGNORED_SUFFIXES):
                continue
            if not isinstance(entry, TensorStorageMetadata):
                raise MalformedFileError(f"entry is {type(entry).__name__}", path=md_file, key=key)
            check_chunks(key, entry, md_file)
            self._tensors[key] = entry
            self._index_key(key, entry, md_file)
        self._check_keys()
        for key, parts in self._index.items():
            self._check_parts(key, parts, md_file)

    def _index_key(self, key: str, entry: TensorStorageMetadata, md_file: Path) -> None:
        stored = _parse_key(key)
        m = match_local(stored.probe())
        if m is None:
            raise LayoutError(
                "unknown key (not a GPT parameter in megatron-core or Transformer Engine naming)",
                path=md_file,
                key=key,
                fix="remove it, or convert the model with the tool that wrote it",
            )
        lead = tuple(entry.size[: len(stored.axes)])
        # experts in a model whose args have none are enumerated, for _check_keys to list
        want = tuple(
            self.arch.num_layers if axis == "layer" else self.arch.num_experts or n
            for axis, n in zip(stored.axes, lead, strict=False)
        )
        if len(entry.size) < len(stored.axes) or lead != want:
            names = ", ".join(f"{a}s" for a in stored.axes)
            raise ShardMismatchError(
                f"stored as {tuple(entry.size)}: leading axes ({names}) are {lead}, the args give {want}",
                path=md_file,
                key=key,
                fix="check num_layers and num_experts against the checkpoint",
            )
        self.dialects.add(m.alias.dialect)
        for index in itertools.product(*(range(n) for n in want)):
            at = dict(zip(stored.axes, index, strict=True))
            layer = at.get("layer", stored.layer if stored.layer is not None else m.layer)
            expert = at.get("expert", stored.expert if stored.expert is not None else m.expert)
            canonical = m.canonical(layer, expert)
            parts = self._index.setdefault(canonical, [])
            clash = next((p for p in parts if p.half == stored.half), None)
            if clash is not None:
                raise LayoutError(
                    f"stored twice, under {clash.dist_key} and {key}",
                    path=md_file,
                    key=canonical,
                    fix="keep one copy of every parameter",
                )
            parts.append(_Part(key, index, stored.half))

    def _check_parts(self, key: str, parts: list[_Part], md_file: Path) -> None:
        parts.sort(key=lambda p: -1 if p.half is None else p.half)
        rule, _, _ = rule_for(key)
        halves = [p.half for p in parts]
        if halves != [None]:
            if halves != [0, 1] or rule.fused is not Fused.GATED or not self.arch.swiglu:
                names = ", ".join(p.dist_key for p in parts)
                raise LayoutError(
                    f"SwiGLU halves stored as {names}; expected one tensor, or both _w (gate) and _v (up)",
                    path=md_file,
                    key=key,
                    fix="check swiglu in the args, and that no half is missing",
                )
        total = expected_shape(rule, self.arch)
        dtypes = set()
        for p in parts:
            entry = self._tensors[p.dist_key]
            shape = tuple(entry.size[len(p.index) :])
            want = total if p.half is None else (total[0] // 2, *total[1:])
            if shape != want:
                raise ShardMismatchError(
                    f"stored shape {shape} contradicts the args, which give {want}",
                    path=md_file,
                    key=p.dist_key,
                    fix="check the recorded hyperparameters against the checkpoint",
                )
            dtypes.add(entry.properties.dtype)
        if len(dtypes) > 1:
            raise ShardMismatchError(
                f"SwiGLU halves have different dtypes {sorted(map(str, dtypes))}", path=md_file, key=key
            )

    def _check_keys(self) -> None:
        check_keys(
            set(self._index),
            self.arch,
            args_file=self.args_file,
            where=lambda key: f"first stored as {self._index[key][0].dist_key}",
        )

    # -- access -----------------------------------------------------------------------------

    def keys(self) -> list[str]:
        return canonical_keys(self.arch)

    def get(self, key: str, *, meta: bool = False) -> Rows:
        """The full parameter ``key`` (vocabulary stripped to the true size when known)."""
        rows = self._assemble(key, meta=meta)
        if key == "embedding.word_embeddings.weight" and self.arch.tied and not meta:
            self._check_tied_head(rows)
        return rows

    def _assemble(self, key: str, *, meta: bool) -> Rows:
        parts = self._index.get(key)
        if not parts:
            raise LayoutError("no stored tensor holds this parameter", path=self.path, key=key)
        rule, _, _ = rule_for(key)
        rows = Rows.cat([self._read_part(p, meta=meta) for p in parts])
        if rule.split is Split.VOCAB and self.arch.vocab_size is not None:
            rows = rows.slice(0, self.arch.vocab_size)
        return rows

    def _read_part(self, part: _Part, *, meta: bool) -> Rows:
        entry = self._tensors[part.dist_key]
        lead = len(part.index)
        shape = tuple(entry.size[lead:])
        dtype = entry.properties.dtype
        if meta:
            return Rows.of(torch.empty(shape, dtype=dtype, device="meta"))
        # the block of one layer (and expert): [1, (1,) ...shape] at (layer, (expert,) 0...)
        region = ChunkStorageMetadata(
            offsets=torch.Size((*part.index, *(0 for _ in shape))),
            sizes=torch.Size((*(1 for _ in part.index), *shape)),
        )
        items = create_read_items_for_chunk_list(part.dist_key, entry, [region])
        self._check_cover(part.dist_key, items, tuple(region.sizes))
        dest = torch.empty(tuple(region.sizes), dtype=dtype)
        run_reads(self._reader, self.path, part.dist_key, PlannedReads(items, dest))
        return Rows.of(dest.reshape(shape))

    def _check_cover(self, key: str, items: list[ReadItem], sizes: tuple[int, ...]) -> None:
        """The chunks read must tile the block exactly, or part of it would be left uninitialised."""
        boxes = [(tuple(i.dest_offsets), tuple(i.lengths)) for i in items]
        covered = sum(math.prod(lengths) for _, lengths in boxes)
        overlapping = any(boxes_overlap(a, b) for a, b in itertools.combinations(boxes, 2))
        if covered != math.prod(sizes) or overlapping:
            raise MalformedFileError(
                f"the stored chunks {'overlap' if overlapping else f'cover {covered} of {math.prod(sizes)} elements'}"
                " in the block read for one parameter",
                path=self.path / METADATA_FILE,
                key=key,
                fix="copy every .distcp file and the .metadata written with them",
            )

    def _check_tied_head(self, embedding: Rows) -> None:
        head = "output_layer.weight"
        if head not in self._index:
            return
        rows = self._assemble(head, meta=False)
        if not rows.equal(embedding):
            raise ShardMismatchError(
                "a copy of the tied embedding differs from the embedding",
                path=self.path / METADATA_FILE,
                key=self._index[head][0].dist_key,
                fix="re-sync the tied embedding and output layer before saving",
            )

    def describe(self) -> dict[str, Any]:
        files = {
            info.relative_path
            for index, info in self.metadata.storage_data.items()
            if not never_read(index.fqn, self.metadata)
        }
        return {**describe_checkpoint(self), "files": sorted(files)}
