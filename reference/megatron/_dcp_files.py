"""The files of a torch_dist iteration directory: metadata.json, the storage files the index names,
common.pt, and DCP reads that never unpickle an object."""

from __future__ import annotations

import io
import math
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.filesystem import FileSystemReader, _StorageInfo
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    Metadata,
    MetadataIndex,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import (
    LoadItemType,
    LoadPlan,
    LoadPlanner,
    ReadItem,
)

from .._fs import read_json
from ..converter._split_rules import (
    IGNORED_SUFFIXES,
)
from ..errors import LayoutError, MalformedFileError, ReleaseError
from ._safeload import LoadedPickle, load_pt

METADATA_FILE: Final = ".metadata"
CONFIG_FILE: Final = "metadata.json"
COMMON_FILE: Final = "common.pt"
COMMON_STATE: Final = "common_state/shard_0_1"  # ShardedObject "common_state", offset (0,), shape (1,)
OPTIMIZER_PREFIX: Final = "optimizer."
DISABLED_WARNING: Final = "torch.distributed is disabled"


class DcpReader(FileSystemReader):
    """DCP's file reader, handed metadata already read safely (it would ``pickle.load`` it itself)."""

    def __init__(self, path: Path, metadata: Metadata) -> None:
        super().__init__(path)
        self._metadata = metadata

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        return self._metadata


def narrow(tensor: torch.Tensor, offsets: Sequence[int], lengths: Sequence[int]) -> torch.Tensor:
    for dim, (start, length) in enumerate(zip(offsets, lengths, strict=True)):
        tensor = tensor.narrow(dim, start, length)
    return tensor


class PlannedReads(LoadPlanner):
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
        return narrow(self.dest, read_item.dest_offsets, read_item.lengths)

    def commit_tensor(self, read_item: ReadItem, tensor: torch.Tensor) -> None:
        return None


def boxes_overlap(a: tuple[tuple[int, ...], tuple[int, ...]], b: tuple[tuple[int, ...], tuple[int, ...]]) -> bool:
    return all(ao < bo + bl and bo < ao + al for ao, al, bo, bl in zip(a[0], a[1], b[0], b[1], strict=True))


def run_reads(reader: DcpReader, iter_dir: Path, key: str, planner: PlannedReads) -> None:
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
            warnings.filterwarnings("ignore", message=DISABLED_WARNING, category=UserWarning)
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


def check_config(path: Path) -> None:
    config = read_json(path)
    backend = config.get("sharded_backend") if isinstance(config, Mapping) else None
    if backend != "torch_dist":
        raise LayoutError(
            f"sharded_backend is {backend!r}, not 'torch_dist'",
            path=path,
            key="sharded_backend",
            fix="convert zarr checkpoints with Megatron (--ckpt-convert-format torch_dist) before reading them",
        )


def check_chunks(key: str, entry: TensorStorageMetadata, md_file: Path) -> None:
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


def never_read(fqn: str, md: Metadata) -> bool:
    """Optimizer state and objects other than the common state (rng_state, _extra_state...)."""
    objects = isinstance(md.state_dict_metadata.get(fqn), BytesStorageMetadata) and fqn != COMMON_STATE
    return fqn.startswith(OPTIMIZER_PREFIX) or objects or fqn.endswith(IGNORED_SUFFIXES)


def check_storage(iter_dir: Path, md: Metadata) -> None:
    """Every file a model entry points into: inside the directory, present, and long enough."""
    md_file = iter_dir / METADATA_FILE
    ends: dict[str, int] = {}
    for index, info in md.storage_data.items():  # of the types read_dcp_metadata checked
        fqn = index.fqn
        if never_read(fqn, md):
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


def read_common(iter_dir: Path, md: Metadata) -> tuple[LoadedPickle | None, Path | None]:
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
    planner = PlannedReads([item])
    run_reads(DcpReader(iter_dir, md), iter_dir, COMMON_STATE, planner)
    loaded = load_object(planner.data or b"", where)
    if isinstance(loaded.obj, io.BytesIO):  # packed once more by DCP's default save planner
        loaded = load_object(loaded.obj.getvalue(), where)
    obj = loaded.obj
    # Megatron saves a ShardedObject's data as a one-element list
    state = obj[0] if isinstance(obj, list) and len(obj) == 1 else obj
    if not isinstance(state, Mapping):
        raise MalformedFileError(f"holds {type(state).__name__}, not a dict", path=where, key=COMMON_STATE)
    return LoadedPickle(state, loaded.stand_ins), where


def load_object(data: bytes, where: Path) -> LoadedPickle:
    """A ``torch.save``d object read from a ``.distcp`` file, loaded under ``load_pt``'s allow-list."""
    with tempfile.TemporaryDirectory(prefix="vla-common-", ignore_cleanup_errors=True) as tmp:
        file = Path(tmp) / "common_state.pt"
        file.write_bytes(data)
        try:
            return load_pt(file)
        except ReleaseError as e:
            raise type(e)(e.detail.replace(str(file), COMMON_STATE), path=where, key=COMMON_STATE, fix=e.fix) from e
