"""Read a DCP ``.metadata`` file safely: unpickled against an allow-list of torch's DCP classes
(2.6 to 2.13, save plans included) and inert stand-ins for megatron-core's, every field type-checked."""

from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path, PosixPath, PurePosixPath
from typing import Any, Final

import torch
from torch.distributed.checkpoint.filesystem import _StorageInfo
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
    SavePlan,
    TensorWriteData,
    WriteItem,
    WriteItemType,
)
from torch.serialization import _get_layout

from ..errors import MalformedFileError, ReleaseError, UnsafeCheckpointError
from ._safeload import Opaque

__all__ = ["read_dcp_metadata"]


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
