"""Load Megatron's ``.pt`` files without running code from them.

``torch.load(weights_only=True, mmap=True)``: tensor bytes stay on disk until touched, so the
optimizer state in the same file is never read. The only classes allowed beyond torch's own
are ``argparse.Namespace`` / ``types.SimpleNamespace`` (Megatron's ``args``) and ``io.BytesIO``
(Transformer Engine's ``_extra_state``). The other classes a real Megatron checkpoint holds
(its own enums and dataclasses in ``args``, numpy's RNG state in ``rng_state``, ``PosixPath``,
``signal.Signals``, ``torch._C.Generator``) are replaced by inert stand-ins that never call
the original and are reported. Any other global (``os.system``, ``builtins.eval``...) refuses
the file before a byte of it is unpickled.
"""

from __future__ import annotations

import argparse
import io
import types
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import torch
from torch.serialization import get_unsafe_globals_in_checkpoint, safe_globals

from .errors import MalformedFileError, UnsafeCheckpointError

__all__ = ["Opaque", "LoadedPickle", "load_pt"]

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


def load_pt(path: Path) -> LoadedPickle:
    """Load ``path`` lazily (mmap) and safely; see the module docstring.

    Raises:
        UnsafeCheckpointError: The pickle names a global outside the allow-list.
        MalformedFileError: The file is truncated or not a torch checkpoint.
    """
    if not zipfile.is_zipfile(path):
        raise MalformedFileError(
            "not a torch zip checkpoint (truncated, corrupt, or saved with the legacy format)",
            path=path,
            fix="re-copy the file; re-save legacy-format files with a current torch",
        )
    try:
        names = get_unsafe_globals_in_checkpoint(str(path))
    except Exception as e:  # noqa: BLE001 - torch raises bare RuntimeError/UnpicklingError
        raise MalformedFileError(f"unreadable checkpoint: {e}", path=path, fix="re-copy the file") from e
    stand_ins = sorted(n for n in names if n.startswith(_STAND_IN_PREFIXES) or n in _STAND_IN_NAMES)
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
        with safe_globals(allowed):
            obj = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated data surfaces as RuntimeError
        raise MalformedFileError(f"cannot load checkpoint: {e}", path=path, fix="re-copy the file") from e
    return LoadedPickle(obj, stand_ins)
