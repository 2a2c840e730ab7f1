"""Files: atomic output directories (built in a temporary sibling, renamed into place at the end),
and JSON read with a failure naming the file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from .errors import MalformedFileError, ReleaseError

__all__ = ["atomic_dir", "atomic_write_bytes", "fsync_file", "read_json", "sha256_file", "MANIFEST"]

# The release manifest's file name: the release, tokenizer and plugin code read it
MANIFEST: Final = "release.json"
_CHUNK: Final = 1 << 20


def fsync_file(path: Path) -> None:
    """Flush a file (or a directory's entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_dir(dst: Path, *, overwrite: bool = False, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling of ``dst``; on success it becomes ``dst``, on failure it is removed."""
    dst = dst.absolute()
    if dst.exists() and not overwrite and (not dst.is_dir() or any(dst.iterdir())):
        raise ReleaseError("destination exists and is not empty", path=dst, fix="choose a new path or pass --overwrite")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
    try:
        yield tmp
        if fsync:
            for p in sorted(tmp.rglob("*")):
                if p.is_file():
                    fsync_file(p)
        old = None
        if dst.exists():
            old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
            dst.rename(old)
        tmp.rename(dst)
        if fsync:
            fsync_file(dst.parent)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a single file atomically (temporary sibling + rename)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_json(path: Path) -> Any:
    """Parse a JSON file, failing with the file's name."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MalformedFileError(f"not valid JSON: {e}", path=path, fix="re-copy or regenerate the file") from e


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()
