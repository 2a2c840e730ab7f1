"""Load Megatron's ``.pt`` files without running code from them.

``torch.load(weights_only=True, mmap=True)``: tensor bytes stay on disk until touched, so the
optimizer state in the same file is never read. ``load_pt_mapped`` goes further: rank files are
read by ``_quickload`` (Python's C unpickler with an allow-list of inert globals) or, for what
it does not handle, by torch with tensors on the meta device, and only the selected tensors
are mapped from the file. The only classes allowed beyond torch's own
are ``argparse.Namespace`` / ``types.SimpleNamespace`` (Megatron's ``args``) and ``io.BytesIO``
(Transformer Engine's ``_extra_state``). The other classes a real Megatron checkpoint holds
(its own enums and dataclasses in ``args``, numpy's RNG state in ``rng_state``, ``PosixPath``,
``signal.Signals``, ``torch._C.Generator``) are replaced by inert stand-ins that never call
the original and are reported. Any other global (``os.system``, ``builtins.eval``...) refuses
the file before a byte of it is unpickled (with ``expect``, torch's ``weights_only`` unpickler
refuses it first, where it meets it, and the scan then names it).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import io
import logging
import threading
import types
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final

import torch
from torch.serialization import (
    add_safe_globals,
    clear_safe_globals,
    get_safe_globals,
    get_unsafe_globals_in_checkpoint,
)

from ..errors import MalformedFileError, UnsafeCheckpointError
from ._quickload import QuickLoadRefused, file_view, local_header, quick_load

__all__ = ["Opaque", "LoadedPickle", "load_pt", "load_pt_mapped"]

log = logging.getLogger(__name__)

_ALLOWED: Final[tuple[Any, ...]] = (argparse.Namespace, types.SimpleNamespace, io.BytesIO)
_ALLOWED_NAMES: Final[frozenset[str]] = frozenset(
    {"argparse.Namespace", "types.SimpleNamespace", "_io.BytesIO", "io.BytesIO"}
)
# Globals a real Megatron checkpoint holds outside the weights (see megatron/core/safe_globals.py);
# they become Opaque: recorded, never imported, never called.
_STAND_IN_PREFIXES: Final[tuple[str, ...]] = ("megatron.", "transformer_engine.", "apex.", "numpy.")
_STAND_IN_NAMES: Final[frozenset[str]] = frozenset(
    {"pathlib.PosixPath", "pathlib.Path", "pathlib.WindowsPath", "signal.Signals", "torch._C.Generator"}
)


# torch's weights_only allow-list is one per process, and libraries add to it when imported
# (megatron-core registers numpy's array constructors and its own enums): each load here sets
# exactly its own list for its duration, one load at a time, and puts the process's back.
_ALLOW_LIST_LOCK: Final = threading.Lock()


@contextlib.contextmanager
def _exactly(allowed: Sequence[Any]) -> Iterator[None]:
    with _ALLOW_LIST_LOCK:
        before = get_safe_globals()
        clear_safe_globals()
        add_safe_globals(list(allowed))
        try:
            yield
        finally:
            clear_safe_globals()
            add_safe_globals(before)


def _stands_in(name: str) -> bool:
    return name.startswith(_STAND_IN_PREFIXES) or name in _STAND_IN_NAMES


class Opaque:
    """Stands in for a Megatron class found in a pickle; keeps its arguments, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<opaque {self.args!r}>"


@dataclass
class LoadedPickle:
    """What a ``.pt`` file held, and which foreign classes were stood in for."""

    obj: Any
    stand_ins: list[str] = field(default_factory=list)


def load_pt(path: Path, *, meta: bool = False, expect: Sequence[str] | None = None) -> LoadedPickle:
    """Load ``path`` lazily (mmap) and safely; see the module docstring.

    ``meta``: tensors on the meta device (no data mapped); each storage records the file offset
    of its bytes as ``_checkpoint_offset``, computed by torch from the zip layout torch.save writes.

    ``expect``: the stand-in globals another file of the same checkpoint needed. The file is then
    first unpickled with exactly those allowed, skipping the scan of its globals; torch's
    ``weights_only`` unpickler still refuses any other global when it meets it, and the file is
    then scanned and refused (or loaded) as without ``expect``.

    Raises:
        UnsafeCheckpointError: The pickle names a global outside the allow-list.
        MalformedFileError: The file is truncated or not a torch checkpoint.
    """
    if not _is_zip(path):
        raise MalformedFileError(
            "not a torch zip checkpoint (truncated, corrupt, or saved with the legacy format)",
            path=path,
            fix="re-copy the file; re-save legacy-format files with a current torch",
        )
    if expect is not None and (quick := _load_expecting(path, meta, expect)) is not None:
        return quick
    try:
        with _exactly(()):
            names = get_unsafe_globals_in_checkpoint(str(path))
    except Exception as e:  # noqa: BLE001 - torch raises bare RuntimeError/UnpicklingError
        raise MalformedFileError(f"unreadable checkpoint: {e}", path=path, fix="re-copy the file") from e
    stand_ins = sorted(n for n in names if _stands_in(n))
    refused = sorted(set(names) - _ALLOWED_NAMES - set(stand_ins))
    if refused:
        raise UnsafeCheckpointError(
            f"the pickle would call {', '.join(refused)}; refused without loading",
            path=path,
            fix="only tensors, argparse.Namespace and Megatron's own classes are accepted; "
            "re-save the checkpoint from a trusted source",
        )
    allowed = [*_ALLOWED, *((Opaque, name) for name in stand_ins)]
    try:
        with _exactly(allowed):
            obj = _torch_load(path, meta)
    except Exception as e:  # noqa: BLE001 - truncated data surfaces as RuntimeError
        raise MalformedFileError(f"cannot load checkpoint: {e}", path=path, fix="re-copy the file") from e
    return LoadedPickle(obj, stand_ins)


def _is_zip(path: Path) -> bool:
    """``zipfile.is_zipfile``, which raises ``BadZipFile`` itself on some corrupt end records
    (a ZIP64 locator naming several disks, say) instead of answering False."""
    try:
        return zipfile.is_zipfile(path)
    except zipfile.BadZipFile:
        return False


def _load_expecting(path: Path, meta: bool, expect: Sequence[str]) -> LoadedPickle | None:
    """Unpickle with exactly ``expect``'s stand-ins allowed; None if that fails for any reason
    (a global beyond them, a truncated file...): ``load_pt`` then scans the file and raises the
    error that names the problem, or loads it with its own stand-ins."""
    try:
        with _exactly([*_ALLOWED, *((Opaque, name) for name in expect)]):
            return LoadedPickle(_torch_load(path, meta), list(expect))
    except Exception:  # noqa: BLE001 - torch raises bare RuntimeError/UnpicklingError; reported by the scan
        return None


def _refuse_inflation(path: Path) -> None:
    """A zip checkpoint whose entries are compressed, or declare more bytes than the file holds, is
    refused before torch reads it: torch.save writes every entry stored, so either is a
    decompression bomb (a 7 MB file that inflates to GiBs), not a checkpoint."""
    if not _is_zip(path):
        return
    size = path.stat().st_size
    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
    compressed = [i.filename for i in infos if i.compress_type != zipfile.ZIP_STORED]
    declared = sum(i.file_size for i in infos)
    if compressed or declared > size:
        what = f"compressed entries ({', '.join(compressed[:3])})" if compressed else f"entries of {declared} bytes"
        raise MalformedFileError(
            f"{what} in a {size}-byte checkpoint: torch.save writes every entry stored, so this would inflate",
            path=path,
            fix="re-save the checkpoint with torch.save",
        )


def _torch_load(path: Path, meta: bool) -> Any:
    _refuse_inflation(path)
    if meta:
        return torch.load(path, map_location="meta", weights_only=True)
    return torch.load(path, map_location="cpu", mmap=True, weights_only=True)


def load_pt_mapped(
    path: Path, select: Callable[[Any], list[dict[str, Any]]], *, expect: Sequence[str] | None = None
) -> LoadedPickle:
    """``load_pt`` with only the tensors in the dicts ``select(obj)`` returns backed by the file;
    every other tensor's bytes are never read (it stays an inert description of the quick
    reader's, or a meta tensor).

    First tried: the quick reader (``_quickload``), Python's C unpickler allowed only inert
    globals and this module's stand-ins, with each selected tensor mapped at the data of the
    record its pickle names. It reads a rank file about ten times faster than torch's
    pure-Python ``weights_only`` unpickler, and calls nothing from the file.

    Anything it does not handle is read with torch: ``map_location="meta"``, which skips torch's
    lookup of every storage's zip record, and the selected tensors are then made views of one
    read-only private mapping of the file. torch computes a meta storage's file offset from the
    layout torch.save writes, so each selected tensor's bytes are checked to be exactly one
    stored record of the archive (local header read back, same size, uncompressed); if any is
    not, or this torch records no offsets, the file is loaded with ``load_pt`` instead.

    What that check cannot see: a pickle that numbers its storages out of the order torch.save
    does could land a tensor on another record of exactly its size. That reads the wrong
    numbers from the same file, never code or bytes outside it; torch.save never writes one, and
    the quick reader, which finds records by name, reads such a file right.
    """
    try:
        obj, stand_ins = quick_load(path, select, stands_in=_stands_in, opaque=Opaque)
        return LoadedPickle(obj, stand_ins)
    except QuickLoadRefused as e:
        log.debug("%s: read with torch's weights_only unpickler (%s)", path, e)
    loaded = load_pt(path, meta=True, expect=expect)
    try:
        dicts = select(loaded.obj)
        mapped = _map_selected(path, dicts)
    except (_NotTorchLayout, zipfile.BadZipFile, OSError):
        return load_pt(path, expect=expect)
    for d, tensors in zip(dicts, mapped, strict=True):
        d.update(tensors)
    return loaded


class _NotTorchLayout(Exception):
    """The archive is not laid out as torch.save writes it (or no offsets were recorded)."""


def _map_selected(path: Path, dicts: list[dict[str, Any]]) -> list[dict[str, torch.Tensor]]:
    size = path.stat().st_size
    with zipfile.ZipFile(path) as z:
        records = sorted((i.header_offset, i) for i in z.infolist())
    starts = [h for h, _ in records]
    storage = torch.UntypedStorage.from_file(str(path), shared=False, nbytes=size)
    verified: dict[int, int] = {}  # data offset -> bytes, for storages already checked
    out: list[dict[str, torch.Tensor]] = []
    with open(path, "rb") as f:
        for d in dicts:
            tensors: dict[str, torch.Tensor] = {}
            for key, t in d.items():
                if not isinstance(t, torch.Tensor):
                    continue
                meta_storage = t.untyped_storage()
                offset = getattr(meta_storage, "_checkpoint_offset", None)
                nbytes = meta_storage.nbytes()
                if not isinstance(offset, int):
                    raise _NotTorchLayout
                if verified.get(offset) != nbytes:
                    _check_record(f, records, starts, offset, nbytes, size)
                    verified[offset] = nbytes
                try:
                    tensors[key] = file_view(
                        storage, offset, nbytes, t.dtype, int(t.storage_offset()), tuple(t.shape), t.stride()
                    )
                except RuntimeError as e:  # sizes beyond the storage: let load_pt name the problem
                    raise _NotTorchLayout from e
            out.append(tensors)
    return out


def _check_record(
    f: BinaryIO, records: list[tuple[int, zipfile.ZipInfo]], starts: list[int], offset: int, nbytes: int, size: int
) -> None:
    """``[offset, offset + nbytes)`` is exactly the data of one stored (uncompressed) record."""
    i = bisect.bisect_left(starts, offset) - 1
    if i < 0 or offset + nbytes > size:
        raise _NotTorchLayout
    info = records[i][1]
    header = local_header(f, info)
    if (
        header is None
        or header[1] != offset
        or info.compress_type != zipfile.ZIP_STORED
        or info.file_size != nbytes
        or "/data/" not in info.filename
    ):
        raise _NotTorchLayout
