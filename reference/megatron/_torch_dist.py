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

import io
import itertools
import math
import pickle
import tempfile
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PosixPath, PurePosixPath
from typing import Any, Final

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.filesystem import FileSystemReader, _StorageInfo
from torch.distributed.checkpoint.metadata import (
    _MEM_FORMAT_ENCODING,
    BytesStorageMetadata,
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    StorageMeta,
    TensorProperties,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import (
    BytesIOWriteData,
    LoadItemType,
    LoadPlan,
    LoadPlanner,
    ReadItem,
    SavePlan,
    TensorWriteData,
    WriteItem,
    WriteItemType,
)
from torch.distributed.checkpoint.planner_helpers import create_read_items_for_chunk_list
from torch.serialization import _get_layout

from .._fs import read_json
from ..converter._model import Arch, Layout, arch_from_args, layout_from_args
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
from ..errors import LayoutError, MalformedFileError, ReleaseError, ShardMismatchError, UnsafeCheckpointError
from ._checkpoint_dir import CheckpointDir, find_checkpoint
from ._legacy import check_keys, resolve_args
from ._safeload import LoadedPickle, Opaque, load_pt

__all__ = ["TorchDistSource", "read_dcp_metadata"]

METADATA_FILE: Final = ".metadata"
CONFIG_FILE: Final = "metadata.json"
COMMON_FILE: Final = "common.pt"
COMMON_STATE: Final = "common_state/shard_0_1"  # ShardedObject "common_state", offset (0,), shape (1,)
_OPTIMIZER: Final = "optimizer."
_LAYERS: Final = "decoder.layers."
_EXPERTS: Final = "mlp.experts.experts."
_LOCAL_EXPERT: Final = "mlp.experts.local_experts.{expert}."
# singleton_local_shards: SwiGLU fc1 stored as two tensors, [gate; up] = [_w; _v]
_HALVES: Final[Mapping[str, int]] = {"_w": 0, "_v": 1}
_DISABLED_WARNING: Final = "torch.distributed is disabled"


class _MCoreMetadata(Metadata):
    """Stands in for megatron-core's ``MCoreMetadata``: DCP ``Metadata`` plus an inert ``mcore_data``."""

    mcore_data: Any = None


# Every global a DCP ``.metadata`` pickle may name, and what it resolves to. The names under
# torch.distributed._shard are where torch < 2.2 kept TensorProperties; they resolve to the
# current classes so that the memory-format enum compares equal.
_DCP_GLOBALS: Final[Mapping[tuple[str, str], Any]] = {
    **{
        ("torch.distributed.checkpoint.metadata", cls.__name__): cls
        for cls in (
            Metadata,
            TensorStorageMetadata,
            BytesStorageMetadata,
            ChunkStorageMetadata,
            TensorProperties,
            MetadataIndex,
            StorageMeta,
            _MEM_FORMAT_ENCODING,
        )
    },
    # megatron-core >= 0.14 caches every rank's save plan in the Metadata (``all_local_plans``):
    # frozen dataclasses and an enum of DCP's planner, never read here
    **{
        ("torch.distributed.checkpoint.planner", cls.__name__): cls
        for cls in (SavePlan, WriteItem, WriteItemType, TensorWriteData, BytesIOWriteData)
    },
    ("torch.distributed._shard.sharded_tensor.metadata", "TensorProperties"): TensorProperties,
    ("torch.distributed._shard.sharded_tensor.metadata", "MEM_FORMAT_ENCODING"): _MEM_FORMAT_ENCODING,
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"): _StorageInfo,
    ("torch", "Size"): torch.Size,
    ("torch.serialization", "_get_layout"): _get_layout,  # a lookup of torch.strided & co by name
    ("collections", "OrderedDict"): OrderedDict,
    ("pathlib", "PosixPath"): PosixPath,  # StorageMeta.checkpoint_id
    ("pathlib", "PurePosixPath"): PurePosixPath,
    ("pathlib._local", "PosixPath"): PosixPath,
}
_TORCH_CONSTANTS: Final[tuple[type, ...]] = (torch.dtype, torch.layout, torch.memory_format)
# Megatron pickles its own Metadata subclass (core <= 0.15) and, in old checkpoints, save plans.
_MEGATRON_DCP: Final = "megatron.core.dist_checkpointing."
_MEGATRON_STAND_INS: Final[Mapping[str, type]] = {"MCoreMetadata": _MCoreMetadata}


class _MetadataUnpickler(pickle.Unpickler):
    """Resolves only the globals of ``_DCP_GLOBALS``, torch constants and Megatron stand-ins."""

    def __init__(self, file: io.BufferedIOBase, path: Path) -> None:
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        found = _DCP_GLOBALS.get((module, name))
        if found is not None:
            return found
        if module == "torch" and isinstance(getattr(torch, name, None), _TORCH_CONSTANTS):
            return getattr(torch, name)
        if module.startswith(_MEGATRON_DCP):
            return _MEGATRON_STAND_INS.get(name, Opaque)
        raise UnsafeCheckpointError(
            f"the pickle would call {module}.{name}; refused without loading",
            path=self._path,
            fix="a DCP .metadata holds only torch.distributed.checkpoint classes; "
            "re-save the checkpoint from a trusted source",
        )


def read_dcp_metadata(path: Path) -> Metadata:
    """Unpickle a DCP ``.metadata`` file against the allow-list, never running code from it.

    Raises:
        UnsafeCheckpointError: The pickle names a global outside the allow-list.
        MalformedFileError: The file is truncated or does not hold DCP ``Metadata``.

    Example:
        >>> md = read_dcp_metadata(Path("ckpt/iter_0000100/.metadata"))  # doctest: +SKIP
        >>> md.state_dict_metadata["decoder.final_layernorm.weight"].size  # doctest: +SKIP
        torch.Size([4096])
    """
    try:
        with path.open("rb") as f:
            md = _MetadataUnpickler(f, path).load()
    except ReleaseError:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged pickle fails in any of a dozen ways
        raise MalformedFileError(
            f"cannot unpickle the DCP metadata: {type(e).__name__}: {e}", path=path, fix="re-copy the file"
        ) from e
    if not (
        isinstance(md, Metadata)
        and isinstance(getattr(md, "state_dict_metadata", None), dict)
        and isinstance(getattr(md, "storage_data", None), dict)
    ):
        raise MalformedFileError(
            f"holds {type(md).__name__}, not torch.distributed.checkpoint Metadata with storage data",
            path=path,
            fix="re-copy the file, or re-save the checkpoint with --ckpt-format torch_dist",
        )
    _check_metadata_types(md, path)
    if getattr(md, "storage_meta", None) is None:
        md.storage_meta = StorageMeta()
    return md


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_dims(v: Any) -> bool:
    return isinstance(v, tuple) and all(_is_int(n) for n in v)


def _check_metadata_types(md: Metadata, path: Path) -> None:
    """Every field the reader uses has the type DCP writes. An unpickled dataclass takes whatever
    attributes its pickle sets, so a damaged file could otherwise fail later on a missing field.

    Raises:
        MalformedFileError: naming the entry whose field is missing or of another type.
    """
    for fqn, entry in md.state_dict_metadata.items():
        problem = None
        if not isinstance(fqn, str):
            problem = "an entry's name is not a string"
        elif isinstance(entry, TensorStorageMetadata):
            properties, chunks = getattr(entry, "properties", None), getattr(entry, "chunks", None)
            if not isinstance(getattr(properties, "dtype", None), torch.dtype):
                problem = "its dtype is missing or not a torch dtype"
            elif not _is_dims(getattr(entry, "size", None)):
                problem = "its size is not a tuple of sizes"
            elif not isinstance(chunks, list) or not all(
                isinstance(c, ChunkStorageMetadata)
                and _is_dims(getattr(c, "offsets", None))
                and _is_dims(getattr(c, "sizes", None))
                for c in chunks
            ):
                problem = "its chunks are not a list of offsets and sizes"
        elif not isinstance(entry, BytesStorageMetadata):
            problem = f"holds {type(entry).__name__}, neither tensor nor bytes metadata"
        if problem:
            raise MalformedFileError(problem, path=path, key=str(fqn), fix="re-copy the file")
    for index, info in md.storage_data.items():
        name, offset = getattr(index, "fqn", None), getattr(index, "offset", None)
        if not (isinstance(index, MetadataIndex) and isinstance(name, str) and (offset is None or _is_dims(offset))):
            raise MalformedFileError(f"storage entry {index!r} is malformed", path=path, fix="re-copy the file")
        if not (
            isinstance(info, _StorageInfo)
            and isinstance(getattr(info, "relative_path", None), str)
            and _is_int(getattr(info, "offset", None))
            and _is_int(getattr(info, "length", None))
        ):
            raise MalformedFileError(
                "its storage location is not a file name, offset and length",
                path=path,
                key=name,
                fix="re-copy the file",
            )


class _Reader(FileSystemReader):
    """DCP's file reader, handed metadata already read safely (it would ``pickle.load`` it itself)."""

    def __init__(self, path: Path, metadata: Metadata) -> None:
        super().__init__(path)
        self._metadata = metadata

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        return self._metadata


def _narrow(tensor: torch.Tensor, offsets: Sequence[int], lengths: Sequence[int]) -> torch.Tensor:
    for dim, (start, length) in enumerate(zip(offsets, lengths, strict=True)):
        tensor = tensor.narrow(dim, start, length)
    return tensor


class _PlannedReads(LoadPlanner):
    """Carries out reads planned in advance: tensor chunks into one buffer, objects as raw bytes.

    Unlike DCP's DefaultLoadPlanner it never unpickles an object it reads.
    """

    def __init__(self, items: list[ReadItem], dest: torch.Tensor | None = None) -> None:
        self.items = items
        self.dest = dest
        self.data: bytes | None = None

    def set_up_planner(self, state_dict: Any, metadata: Metadata | None = None, is_coordinator: bool = False) -> None:
        return None

    def create_local_plan(self) -> LoadPlan:
        return LoadPlan(list(self.items))

    def create_global_plan(self, global_plan: list[LoadPlan]) -> list[LoadPlan]:
        return global_plan

    def finish_plan(self, central_plan: LoadPlan) -> LoadPlan:
        return central_plan

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        self.data = value.read()

    def resolve_tensor(self, read_item: ReadItem) -> torch.Tensor:
        if self.dest is None:
            raise MalformedFileError("a tensor read was planned for an object", key=read_item.dest_index.fqn)
        return _narrow(self.dest, read_item.dest_offsets, read_item.lengths)

    def commit_tensor(self, read_item: ReadItem, tensor: torch.Tensor) -> None:
        return None


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
        self._reader = _Reader(ckpt.iter_dir, metadata)
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
        _check_config(ckpt.iter_dir / CONFIG_FILE)
        metadata_file = ckpt.iter_dir / METADATA_FILE
        if not metadata_file.is_file():
            raise LayoutError(
                f"no {METADATA_FILE} beside {CONFIG_FILE}",
                path=ckpt.iter_dir,
                fix="copy the whole iteration directory, hidden files included",
            )
        metadata = read_dcp_metadata(metadata_file)
        _check_storage(ckpt.iter_dir, metadata)
        common, common_file = _read_common(ckpt.iter_dir, metadata)
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
            if key.startswith(_OPTIMIZER) or isinstance(entry, BytesStorageMetadata):
                continue  # optimizer state; objects (rng_state, common_state, _extra_state)
            if key.endswith(IGNORED_SUFFIXES):
                continue
            if not isinstance(entry, TensorStorageMetadata):
                raise MalformedFileError(f"entry is {type(entry).__name__}", path=md_file, key=key)
            _check_chunks(key, entry, md_file)
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
        _run_reads(self._reader, self.path, part.dist_key, _PlannedReads(items, dest))
        return Rows.of(dest.reshape(shape))

    def _check_cover(self, key: str, items: list[ReadItem], sizes: tuple[int, ...]) -> None:
        """The chunks read must tile the block exactly, or part of it would be left uninitialised."""
        boxes = [(tuple(i.dest_offsets), tuple(i.lengths)) for i in items]
        covered = sum(math.prod(lengths) for _, lengths in boxes)
        overlap = any(_overlap(a, b) for a, b in itertools.combinations(boxes, 2))
        if covered != math.prod(sizes) or overlap:
            raise MalformedFileError(
                f"the stored chunks {'overlap' if overlap else f'cover {covered} of {math.prod(sizes)} elements'}"
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
            if not _never_read(index.fqn, self.metadata)
        }
        return {
            "format": self.format,
            "dialects": sorted(self.dialects),
            "iteration": "release" if self.iteration is None else self.iteration,
            "checkpoint_version": self.checkpoint_version,
            "layout": self.layout.describe(),
            "args_from": str(self.args_file),
            "files": sorted(files),
        }


def _overlap(a: tuple[tuple[int, ...], tuple[int, ...]], b: tuple[tuple[int, ...], tuple[int, ...]]) -> bool:
    return all(ao < bo + bl and bo < ao + al for ao, al, bo, bl in zip(a[0], a[1], b[0], b[1], strict=True))


def _run_reads(reader: _Reader, iter_dir: Path, key: str, planner: _PlannedReads) -> None:
    """``dcp.load`` of exactly the planned items; any failure names the files they come from."""
    storage = reader.read_metadata().storage_data
    try:
        files = sorted({storage[i.storage_index].relative_path for i in planner.items})
    except KeyError as e:
        raise MalformedFileError(
            "a chunk listed for this tensor has no storage entry", path=iter_dir / METADATA_FILE, key=key
        ) from e
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_DISABLED_WARNING, category=UserWarning)
            dcp.load({key: planner.dest}, storage_reader=reader, planner=planner, no_dist=True)
    except (Exception, CheckpointException) as e:  # noqa: BLE001 - DCP wraps whatever torch.load raised
        # torch's own message suggests weights_only=False, the one thing never to do here
        inner = next(iter(e.failures.values()))[0] if isinstance(e, CheckpointException) and e.failures else e
        raise MalformedFileError(
            f"cannot read the stored bytes from {', '.join(files)} ({type(inner).__name__})",
            path=iter_dir / files[0] if len(files) == 1 else iter_dir,
            key=key,
            fix="re-copy the checkpoint's .distcp files",
        ) from e


def _check_config(path: Path) -> None:
    config = read_json(path)
    backend = config.get("sharded_backend") if isinstance(config, Mapping) else None
    if backend != "torch_dist":
        raise LayoutError(
            f"sharded_backend is {backend!r}, not 'torch_dist'",
            path=path,
            key="sharded_backend",
            fix="convert zarr checkpoints with Megatron (--ckpt-convert-format torch_dist) before reading them",
        )


def _check_chunks(key: str, entry: TensorStorageMetadata, md_file: Path) -> None:
    size = tuple(entry.size)
    if not isinstance(entry.properties.dtype, torch.dtype):
        raise MalformedFileError(f"dtype is {entry.properties.dtype!r}", path=md_file, key=key)
    total = 0
    for chunk in entry.chunks:
        offsets, sizes = tuple(chunk.offsets), tuple(chunk.sizes)
        if (
            len(offsets) != len(size)
            or len(sizes) != len(size)
            or any(o < 0 or n < 0 or o + n > s for o, n, s in zip(offsets, sizes, size, strict=True))
        ):
            raise MalformedFileError(
                f"chunk at {offsets} of {sizes} lies outside the tensor's {size}", path=md_file, key=key
            )
        total += math.prod(sizes)
    if total != math.prod(size):
        raise MalformedFileError(
            f"chunks hold {total} elements, the tensor {math.prod(size)}",
            path=md_file,
            key=key,
            fix="copy every .distcp file and the .metadata written with them",
        )


def _never_read(fqn: str, md: Metadata) -> bool:
    """Optimizer state and objects other than the common state (rng_state, _extra_state...)."""
    objects = isinstance(md.state_dict_metadata.get(fqn), BytesStorageMetadata) and fqn != COMMON_STATE
    return fqn.startswith(_OPTIMIZER) or objects or fqn.endswith(IGNORED_SUFFIXES)


def _check_storage(iter_dir: Path, md: Metadata) -> None:
    """Every file a model entry points into: inside the directory, present, and long enough."""
    md_file = iter_dir / METADATA_FILE
    ends: dict[str, int] = {}
    for index, info in md.storage_data.items():  # of the types read_dcp_metadata checked
        fqn = index.fqn
        if _never_read(fqn, md):
            continue
        name = info.relative_path
        if name in ("", ".", "..") or any(c in name for c in "/\\\0"):
            raise MalformedFileError(
                f"storage file {name!r} is not a file name in the checkpoint directory", path=md_file, key=fqn
            )
        ends[name] = max(ends.get(name, 0), info.offset + info.length)
    for name, end in sorted(ends.items()):
        file = iter_dir / name
        if not file.is_file():
            raise LayoutError(
                f"missing, but {METADATA_FILE} places tensors in it", path=file, fix="copy every .distcp file"
            )
        size = file.stat().st_size
        if size < end:
            raise MalformedFileError(
                f"truncated: {size} bytes, but {METADATA_FILE} places data up to byte {end}",
                path=file,
                fix="re-copy the file",
            )


def _read_common(iter_dir: Path, md: Metadata) -> tuple[LoadedPickle | None, Path | None]:
    """The non-sharded state (``args``...): ``common.pt``, else the ``common_state`` object, else none."""
    legacy = iter_dir / COMMON_FILE
    if legacy.is_file():
        loaded = load_pt(legacy)
        if not isinstance(loaded.obj, Mapping):
            raise MalformedFileError(f"holds {type(loaded.obj).__name__}, not a dict", path=legacy)
        return loaded, legacy
    if not isinstance(md.state_dict_metadata.get(COMMON_STATE), BytesStorageMetadata):
        return None, None
    index = MetadataIndex(COMMON_STATE)
    info = md.storage_data.get(index)
    where = iter_dir / info.relative_path if isinstance(info, _StorageInfo) else iter_dir
    item = ReadItem(
        type=LoadItemType.BYTE_IO,
        dest_index=index,
        dest_offsets=torch.Size((0,)),
        storage_index=index,
        storage_offsets=torch.Size((0,)),
        lengths=torch.Size((0,)),
    )
    planner = _PlannedReads([item])
    _run_reads(_Reader(iter_dir, md), iter_dir, COMMON_STATE, planner)
    loaded = _load_object(planner.data or b"", where)
    if isinstance(loaded.obj, io.BytesIO):  # packed once more by DCP's default save planner
        loaded = _load_object(loaded.obj.getvalue(), where)
    obj = loaded.obj
    # Megatron saves a ShardedObject's data as a one-element list
    state = obj[0] if isinstance(obj, list) and len(obj) == 1 else obj
    if not isinstance(state, Mapping):
        raise MalformedFileError(f"holds {type(state).__name__}, not a dict", path=where, key=COMMON_STATE)
    return LoadedPickle(state, loaded.stand_ins), where


def _load_object(data: bytes, where: Path) -> LoadedPickle:
    """A ``torch.save``d object read from a ``.distcp`` file, loaded under ``load_pt``'s allow-list."""
    with tempfile.TemporaryDirectory(prefix="vla-common-", ignore_cleanup_errors=True) as tmp:
        file = Path(tmp) / "common_state.pt"
        file.write_bytes(data)
        try:
            return load_pt(file)
        except ReleaseError as e:
            raise type(e)(e.detail.replace(str(file), COMMON_STATE), path=where, key=COMMON_STATE, fix=e.fix) from e
