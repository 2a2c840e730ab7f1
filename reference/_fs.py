"""Files: atomic output directories (built in a temporary sibling, renamed into place at the end),
and JSON read with a failure naming the file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from .errors import MalformedFileError, ReleaseError

log = logging.getLogger(__name__)

__all__ = [
    "atomic_dir",
    "atomic_write_bytes",
    "remove_stale_siblings",
    "fsync_file",
    "inside",
    "read_json",
    "read_text",
    "regular_file",
    "sha256_file",
    "MANIFEST",
    "MAX_JSON_BYTES",
]

# The release manifest's file name: the release, tokenizer and plugin code read it
MANIFEST: Final = "release.json"
_CHUNK: Final = 1 << 20
# A JSON file of a release larger than this is refused unread (tokenizer.json of a 256k vocabulary
# is ~20 MB; safetensors headers are read by their own bound)
MAX_JSON_BYTES: Final = 256 << 20


def regular_file(path: Path) -> os.stat_result:
    """``path``'s stat, following symlinks; a FIFO, a device or a socket is refused (reading one
    would block or never end), naming the file.

    Raises:
        MalformedFileError: not a regular file.
    """
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        kind = (
            "a FIFO"
            if stat.S_ISFIFO(st.st_mode)
            else "a device"
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
            else "a socket"
            if stat.S_ISSOCK(st.st_mode)
            else "a directory"
            if stat.S_ISDIR(st.st_mode)
            else "special"
        )
        raise MalformedFileError(
            f"not a regular file: {kind}",
            path=path,
            fix="ship the file's contents as a regular file, not a link to one",
        )
    return st


def inside(root: Path, name: object) -> Path | None:
    """The file a release names as ``name`` (a relative path string), if it resolves inside
    ``root`` (symlinks followed); None when ``name`` is not a string, is absolute, or leaves it.

    >>> inside(Path("/r"), "configs/a.yaml") == Path("/r/configs/a.yaml").resolve()
    True
    >>> inside(Path("/r"), "/etc/passwd"), inside(Path("/r"), "../x"), inside(Path("/r"), 3)
    (None, None, None)
    """
    if not isinstance(name, str) or not name or "\x00" in name or Path(name).is_absolute():
        return None
    base = root.resolve()
    path = (base / name).resolve()
    return path if path == base or base in path.parents else None


def fsync_file(path: Path) -> None:
    """Flush a file (or a directory's entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _owner_tag() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def remove_stale_siblings(dst: Path) -> list[Path]:
    """Remove what a killed writer of ``dst`` left beside it (``.NAME.tmp-HOST-PID-*`` and
    ``.NAME.old-HOST-PID``) when that process, on this host, is gone; returns what was removed.

    A writer on another host (a shared file system) or still running is left alone.

    Example:
        >>> remove_stale_siblings(Path("/nonexistent/out"))
        []
    """
    host = socket.gethostname()
    removed: list[Path] = []
    try:
        siblings = [p for p in dst.parent.iterdir() if p.name.startswith(f".{dst.name}.")]
    except OSError:
        return removed
    for p in siblings:
        rest = p.name[len(dst.name) + 2 :]
        kind, _, tag = rest.partition("-")
        if kind not in ("tmp", "old") or not tag.startswith(host + "-"):
            continue
        pid_text = tag[len(host) + 1 :].split("-", 1)[0]
        if not pid_text.isascii() or not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink()
        removed.append(p)
    return removed


@contextlib.contextmanager
def atomic_dir(dst: Path, *, overwrite: bool = False, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling of ``dst``; on success it becomes ``dst``, on failure it is removed.

    The sibling is named after this host and process, so that the next writer of ``dst`` removes
    what a writer killed half-way (SIGKILL, power loss) left (:func:`remove_stale_siblings`)."""
    dst = dst.absolute()
    if dst.exists() and not overwrite and (not dst.is_dir() or any(dst.iterdir())):
        raise ReleaseError("destination exists and is not empty", path=dst, fix="choose a new path or pass --overwrite")
    dst.parent.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_siblings(dst):
        log.info("removed %s, left by a writer that was killed", stale)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-{_owner_tag()}-", dir=dst.parent))
    try:
        yield tmp
        if fsync:
            for p in sorted(tmp.rglob("*")):
                if p.is_file():
                    fsync_file(p)
        old = None
        if dst.exists():
            old = dst.with_name(f".{dst.name}.old-{_owner_tag()}")
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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-{_owner_tag()}-", dir=path.parent)
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


def read_text(path: Path, *, max_bytes: int, what: str) -> str:
    """A text file of the release, UTF-8, refused (MalformedFileError naming it) when it is not a
    regular file or is larger than ``max_bytes``: the checks that read it stay bounded."""
    try:
        size = regular_file(path).st_size
        if size > max_bytes:
            raise MalformedFileError(
                f"{what} is {size} bytes, over the limit of {max_bytes} bytes",
                path=path,
                fix=f"ship a {what} of a real size (the limit is {max_bytes >> 10} KiB)",
            )
        return path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise MalformedFileError(f"cannot read the {what}: {e}", path=path, fix="save it as UTF-8 text") from e


def read_json(path: Path, *, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parse a JSON file, failing with the file's name: also when it is not a regular file, is
    larger than ``max_bytes``, nests too deeply, or holds a number too long to convert."""
    try:
        if regular_file(path).st_size > max_bytes:
            raise MalformedFileError(
                f"{path.stat().st_size} bytes, over the {max_bytes >> 20} MiB limit for a JSON file",
                path=path,
                fix="ship the file at its real size",
            )
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        what = "nested too deeply" if isinstance(e, RecursionError) else e
        raise MalformedFileError(f"not valid JSON: {what}", path=path, fix="re-copy or regenerate the file") from e


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks; a FIFO or device is refused (:func:`regular_file`)."""
    regular_file(path)
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()
