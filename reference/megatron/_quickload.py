"""A quick reader for rank files: Python's C unpickler with an allow-list of inert globals.

torch's ``weights_only`` unpickler is pure Python: a Megatron rank file (about 300 storages, most
of them optimizer state) takes it about 60 ms, most of a warm merge's time before its first
write. This reader unpickles the same ``data.pkl`` with ``pickle.Unpickler``, whose
``find_class`` hands out only

- its own constructors, which record each tensor's storage and geometry, to be checked and
  mapped if selected (``torch._utils._rebuild_tensor_v2``/``_v3``,
  ``_rebuild_parameter[_with_state]``; no hooks);
- values and types that run nothing of the file's: torch dtypes, the legacy storage types (as
  tokens naming a dtype), ``torch.Size``, ``collections.OrderedDict``, ``io.BytesIO``,
  ``_codecs.encode`` for latin-1 only (how protocol 2 pickles ``bytes``), and
  ``argparse.Namespace`` / ``types.SimpleNamespace`` as subclasses whose attributes cannot be
  set from the pickle;
- the caller's inert stand-in for Megatron's own classes (``stands_in``).

Anything else (another global, a tensor with hooks or metadata, a persistent id that is not a
storage, a tensor changed by a BUILD after it was rebuilt, big-endian data, a compressed
record, two records of one name, an archive it cannot parse) raises ``QuickLoadRefused``, and
the caller reads the file with torch's ``weights_only`` unpickler, which refuses or loads it.
No callable from the file, torch's rebuild functions included, is ever called.

Selected tensors are then views of one private (copy-on-write, never written) mapping of the
file, each at the data of the record its pickle names (``<archive>/data/<key>``), found through
the archive's own directory: the record must be stored uncompressed and hold exactly the
storage's bytes. A record that is missing or of another size, or a tensor running past its
storage, is a ``MalformedFileError`` naming the file and the key: the file is corrupt,
whichever reader reads it.
"""

from __future__ import annotations

import argparse
import io
import pickle
import struct
import types
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, Final

import torch

from ..errors import MalformedFileError, ReleaseError

__all__ = ["QuickLoadRefused", "quick_load", "file_view", "local_header"]


class QuickLoadRefused(Exception):
    """The quick reader does not handle this file; torch's ``weights_only`` reader decides."""


class _Sealed(type):
    """Metaclass of the types handed to the pickle: a BUILD on the class itself cannot set its
    attributes (the C unpickler ``setattr``s slot state onto whatever is on its stack)."""

    def __setattr__(cls, name: str, value: Any) -> None:
        raise QuickLoadRefused(f"the pickle sets {name} on {cls.__name__}")


class Namespace(argparse.Namespace, metaclass=_Sealed):
    """``argparse.Namespace`` as the quick reader builds it."""


class SimpleNamespace(types.SimpleNamespace, metaclass=_Sealed):
    """``types.SimpleNamespace`` as the quick reader builds it."""


class _Constructor:
    """A callable the pickle may REDUCE; it has no attributes a BUILD could set."""

    __slots__ = ("_build",)
    _build: Callable[..., Any]

    def __init__(self, build: Callable[..., Any]) -> None:
        object.__setattr__(self, "_build", build)

    def __call__(self, *args: Any) -> Any:
        return self._build(*args)

    def __setattr__(self, name: str, value: Any) -> None:
        raise QuickLoadRefused(f"the pickle sets {name} on a constructor")


class _StorageType:
    """A legacy storage class named in a persistent id (``torch.BFloat16Storage``): a dtype."""

    __slots__ = ("dtype",)
    dtype: torch.dtype

    def __init__(self, dtype: torch.dtype) -> None:
        object.__setattr__(self, "dtype", dtype)

    def __setattr__(self, name: str, value: Any) -> None:
        raise QuickLoadRefused(f"the pickle sets {name} on a storage type")


# torch.save names a storage by its legacy typed class (torch.BFloat16Storage; older torch
# versions named a GPU tensor's torch.cuda.BFloat16Storage), or as torch.storage.UntypedStorage
# (bytes) for the dtypes without one. The device is ignored: selected tensors are mapped on the CPU.
_STORAGE_DTYPES: Final[dict[str, torch.dtype]] = {
    "UntypedStorage": torch.uint8,
    "ByteStorage": torch.uint8,
    "CharStorage": torch.int8,
    "ShortStorage": torch.int16,
    "IntStorage": torch.int32,
    "LongStorage": torch.int64,
    "HalfStorage": torch.float16,
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16,
    "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
}
_DTYPES: Final[dict[str, torch.dtype]] = {n: v for n, v in vars(torch).items() if isinstance(v, torch.dtype)}


class _Storage:
    """One storage record of the archive."""

    __slots__ = ("key", "nbytes")

    def __init__(self, key: str, nbytes: int) -> None:
        self.key = key
        self.nbytes = nbytes


class _StorageRef:
    """What a persistent id unpickles to: a storage record read as ``dtype``."""

    __slots__ = ("storage", "dtype")
    storage: _Storage
    dtype: torch.dtype

    def __init__(self, storage: _Storage, dtype: torch.dtype) -> None:
        object.__setattr__(self, "storage", storage)
        object.__setattr__(self, "dtype", dtype)

    def __setattr__(self, name: str, value: Any) -> None:
        raise QuickLoadRefused(f"the pickle sets {name} on a storage")


class _Lazy:
    """A tensor as the pickle describes it: storage, dtype and geometry, checked and mapped only
    if the caller selects it. A rank file holds about 300 tensors, most of them optimizer state
    that a merge never touches; building each as a tensor took most of the unpickling time.
    Nothing can be set on it (a BUILD after the constructor is refused)."""

    __slots__ = ("storage", "dtype", "args")
    storage: _StorageRef
    dtype: torch.dtype
    args: tuple[Any, ...]  # (storage_offset, size, stride, requires_grad, hooks[, metadata])

    def __init__(self, storage: _StorageRef, dtype: torch.dtype, args: tuple[Any, ...]) -> None:
        object.__setattr__(self, "storage", storage)
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "args", args)

    def __setattr__(self, name: str, value: Any) -> None:
        raise QuickLoadRefused(f"the pickle sets {name} on a tensor")


class _Unpickler(pickle.Unpickler):
    def __init__(self, path: Path, file: BinaryIO, prefix: str, stands_in: Callable[[str], bool], opaque: type) -> None:
        super().__init__(file, fix_imports=False, encoding="utf-8")
        self._path = path
        self._prefix = prefix
        self._stands_in = stands_in
        self._opaque = opaque
        self.stand_ins: set[str] = set()
        self.storages: dict[str, _Storage] = {}
        self._globals: dict[tuple[str, str], Any] = {
            ("torch._utils", "_rebuild_tensor_v2"): _Constructor(self._rebuild_tensor),
            ("torch._utils", "_rebuild_tensor_v3"): _Constructor(self._rebuild_tensor_v3),
            ("torch._utils", "_rebuild_parameter"): _Constructor(self._rebuild_parameter),
            ("torch._utils", "_rebuild_parameter_with_state"): _Constructor(self._rebuild_parameter),
            ("collections", "OrderedDict"): OrderedDict,
            ("_codecs", "encode"): _Constructor(_latin1),  # protocol 2 pickles bytes as encode(str, "latin1")
            ("torch", "Size"): torch.Size,
            ("_io", "BytesIO"): io.BytesIO,
            ("io", "BytesIO"): io.BytesIO,
            ("argparse", "Namespace"): Namespace,
            ("types", "SimpleNamespace"): SimpleNamespace,
        }

    def find_class(self, module: str, name: str) -> Any:
        found = self._globals.get((module, name))
        if found is not None:
            return found
        if module == "torch" and name in _DTYPES:
            return _DTYPES[name]
        if module in ("torch", "torch.storage", "torch.cuda") and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        qualified = f"{module}.{name}"
        if self._stands_in(qualified):
            self.stand_ins.add(qualified)
            return self._opaque
        raise QuickLoadRefused(f"global {qualified}")

    def persistent_load(self, pid: Any) -> Any:
        # torch.save: ("storage", storage type, record key, location, numel in the type's dtype)
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise QuickLoadRefused(f"persistent id {pid!r}")
        _, kind, key, _location, numel = pid
        if not (isinstance(kind, _StorageType) and isinstance(key, str) and _is_count(numel)):
            raise QuickLoadRefused(f"persistent id {pid!r}")
        nbytes = numel * kind.dtype.itemsize
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = _Storage(key, nbytes)
        elif storage.nbytes != nbytes:
            raise QuickLoadRefused(f"storage {key} named with two sizes")
        return _StorageRef(storage, kind.dtype)

    def _rebuild_tensor(self, storage: Any, *args: Any) -> _Lazy:
        # (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
        if not (isinstance(storage, _StorageRef) and len(args) in (5, 6)):
            raise QuickLoadRefused("a tensor rebuilt from other arguments than torch.save writes")
        return _Lazy(storage, storage.dtype, args)

    def _rebuild_tensor_v3(self, storage: Any, *args: Any) -> _Lazy:
        # (untyped storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype[, metadata]):
        # what torch.save writes for the dtypes without a legacy storage class (float8, uint16...)
        if not (
            isinstance(storage, _StorageRef)
            and storage.dtype == torch.uint8
            and len(args) in (6, 7)
            and isinstance(args[5], torch.dtype)
        ):
            raise QuickLoadRefused("a tensor rebuilt from other arguments than torch.save writes")
        return _Lazy(storage, args[5], args[:5] + args[6:])

    def _rebuild_parameter(self, data: Any, requires_grad: Any, hooks: Any, state: Any = None) -> _Lazy:
        # _rebuild_parameter(data, requires_grad, hooks) and, for a parameter carrying attributes
        # (Megatron's tensor_model_parallel, partition_dim...), ..._with_state(..., state): the
        # state is already unpickled into inert values, and a tensor does not need it.
        if not (isinstance(data, _Lazy) and isinstance(hooks, Mapping)):
            raise QuickLoadRefused("a parameter that is not a plain tensor")
        if hooks:
            raise QuickLoadRefused("a parameter with hooks")
        return data


def _geometry(path: Path, prefix: str, t: _Lazy) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """A selected tensor's (storage offset, size, stride), checked.

    Raises:
        QuickLoadRefused: Hooks, metadata, or numbers that are not a geometry.
        MalformedFileError: The tensor runs past its storage.
    """
    offset, size, stride, requires_grad, hooks, *metadata = t.args
    if not (
        _is_count(offset)
        and _is_shape(size)
        and _is_shape(stride, signed=True)
        and len(size) == len(stride)
        and isinstance(requires_grad, bool)
        and isinstance(hooks, Mapping)
        and not hooks
        and not (metadata and metadata[0])
    ):
        raise QuickLoadRefused("a tensor with hooks, metadata or malformed geometry")
    record = t.storage.storage
    numel = record.nbytes // t.dtype.itemsize
    extent = 0 if 0 in size else 1 + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if min(stride, default=0) < 0 or offset + extent > numel:
        raise MalformedFileError(
            f"a tensor of size {tuple(size)}, stride {tuple(stride)} at offset {offset} "
            f"runs past its storage of {numel} elements",
            path=path,
            key=f"{prefix}data/{record.key}",
            fix="re-copy the file; it is not what torch.save wrote",
        )
    return offset, tuple(size), tuple(stride)


def _latin1(text: Any, encoding: Any) -> bytes:
    if not (isinstance(text, str) and encoding == "latin1"):
        raise QuickLoadRefused(f"_codecs.encode with {encoding!r}")
    return text.encode("latin1")


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _is_shape(value: Any, *, signed: bool = False) -> bool:
    return isinstance(value, tuple) and all(type(v) is int and (signed or v >= 0) for v in value)


def quick_load(
    path: Path,
    select: Callable[[Any], list[dict[str, Any]]],
    *,
    stands_in: Callable[[str], bool],
    opaque: type,
) -> tuple[Any, list[str]]:
    """Unpickle ``path`` and map the tensors in the dicts ``select`` returns.

    Returns the object and the sorted stand-in globals it held. Tensors outside those dicts stay
    inert descriptions (``_Lazy``): never checked, mapped or read.

    Raises:
        QuickLoadRefused: Anything this reader does not handle; read the file with torch instead.
        MalformedFileError: A selected tensor's record is missing, of another size or misplaced,
            or a tensor runs past its storage.
    """
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            records = {i.filename: i for i in infos}
            if len(records) != len(infos):  # readers could disagree on which copy counts
                raise QuickLoadRefused("two records of the same name")
            pickles = [n for n in records if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pickles) != 1 or records[pickles[0]].compress_type != zipfile.ZIP_STORED:
                raise QuickLoadRefused("no single, stored <archive>/data.pkl record")
            prefix = pickles[0][: -len("data.pkl")]
            if prefix + "byteorder" in records and z.read(prefix + "byteorder") != b"little":
                raise QuickLoadRefused("data not stored little-endian")
            unpickler = _Unpickler(path, io.BytesIO(z.read(pickles[0])), prefix, stands_in, opaque)
            obj = unpickler.load()
            stand_ins = sorted(unpickler.stand_ins)
    except (QuickLoadRefused, ReleaseError):
        raise
    except Exception as e:  # noqa: BLE001 - a malformed zip or pickle raises any type; torch's reader names it
        raise QuickLoadRefused(f"{type(e).__name__}: {e}") from e
    try:
        _map(path, size, select(obj), records, prefix)
    except (OSError, RuntimeError) as e:  # RuntimeError: torch refusing a view it should not be asked for
        raise QuickLoadRefused(f"cannot map {path}: {e}") from e
    return obj, stand_ins


def _map(
    path: Path,
    size: int,
    dicts: list[dict[str, Any]],
    records: Mapping[str, zipfile.ZipInfo],
    prefix: str,
) -> None:
    storage = torch.UntypedStorage.from_file(str(path), shared=False, nbytes=size)
    starts: dict[str, int] = {}
    with open(path, "rb") as f:
        for d in dicts:
            for key, t in list(d.items()):
                if isinstance(t, _StorageRef):
                    raise QuickLoadRefused(f"{key} is a bare storage")
                if not isinstance(t, _Lazy):
                    continue
                offset, shape, stride = _geometry(path, prefix, t)
                record = t.storage.storage
                start = starts.get(record.key)
                if start is None:
                    start = starts[record.key] = _data_start(
                        path, f, records, prefix + "data/" + record.key, record.nbytes, size, key
                    )
                d[key] = file_view(storage, start, record.nbytes, t.dtype, offset, shape, stride)


def file_view(
    file: Any,  # torch.UntypedStorage.from_file(path)
    start: int,
    nbytes: int,
    dtype: torch.dtype,
    offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
) -> torch.Tensor:
    """A tensor over bytes ``start:start+nbytes`` of a mapped file (``offset`` in elements);
    torch refuses (RuntimeError) a geometry that runs past those bytes."""
    view = torch.empty(0, dtype=dtype)
    return view.set_(file[start : start + nbytes], offset, size, stride)


def local_header(f: BinaryIO, info: zipfile.ZipInfo) -> tuple[bytes, int] | None:
    """The record name a zip local header holds, and where the record's data starts; None if
    there is no local header where the archive directory puts ``info``."""
    f.seek(info.header_offset)
    header = f.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        return None
    name_len, extra_len = struct.unpack_from("<HH", header, 26)
    return f.read(name_len), info.header_offset + 30 + name_len + extra_len


def _data_start(
    path: Path, f: BinaryIO, records: Mapping[str, zipfile.ZipInfo], name: str, nbytes: int, size: int, key: str
) -> int:
    """Where record ``name``'s data starts; it must be stored, uncompressed, exactly ``nbytes``.

    Raises:
        QuickLoadRefused: The record is compressed (torch.save never does it; torch decides).
        MalformedFileError: The record is missing, of another size, or its header disagrees.
    """
    info = records.get(name)
    if info is not None and info.compress_type != zipfile.ZIP_STORED:
        raise QuickLoadRefused(f"{name} is compressed")
    problem = None
    if info is None:
        problem = f"its storage record {name} is missing"
    elif info.file_size != nbytes:
        problem = f"its storage record {name} holds {info.file_size} bytes, the pickle needs {nbytes}"
    elif (header := local_header(f, info)) is None:
        problem = f"no local header where the archive directory puts {name}"
    elif header[0] != info.orig_filename.encode():
        problem = f"the local header of {name} names another record"
    elif header[1] + nbytes > size:
        problem = f"{name} runs past the end of the file"
    else:
        return header[1]
    raise MalformedFileError(problem, path=path, key=key, fix="re-copy the file; it is not what torch.save wrote")
