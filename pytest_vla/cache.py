"""Expensive artefacts (merged or resharded checkpoints), built once per content, shared by workers.

Keys are SHA-256 digests of the inputs' content. File digests are remembered per (path, size,
mtime, ctime, inode) so that a rerun does not rehash, and the manifest's verification uses the
same digests (one reading of each file per content); a lock file serialises builders across xdist
workers, and the builder writes atomically, so a reader never sees half an artefact.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import vla_reference
from vla_reference.release import release_files, sha256_file

from . import __version__

__all__ = ["ArtefactCache"]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@functools.cache
def converter_digest() -> str:
    """SHA-256 of the library's own source: an artefact built by another converter (an upgrade, an
    edited checkout with the same version number) is never taken for this one's."""
    h = hashlib.sha256()
    for root in map(Path, vla_reference.__path__):
        for f in sorted(root.rglob("*.py")):
            h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


class ArtefactCache:
    """A directory of artefacts keyed by content digests.

    Example:
        >>> cache = ArtefactCache(Path("~/.cache/pytest-vla").expanduser())  # doctest: +SKIP
        >>> merged = cache.build(cache.digest(ckpt), "merged", lambda dst: merge(ckpt, dst))  # doctest: +SKIP
    """

    def __init__(
        self,
        root: Path,
        progress: Callable[[str], None] | None = None,
        *,
        trust_digests_since: float | None = None,
    ) -> None:
        self.root = root
        self.progress = progress  # told about long steps (a terminal shows them; CI logs stay quiet)
        # --vla-rehash: a remembered file digest is used only if this run recorded it
        self.trust_digests_since = trust_digests_since

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[None]:
        """Tell ``progress`` that ``what`` starts, and when it is done, how long it took."""
        if self.progress is None:
            yield
            return
        start = time.monotonic()
        self.progress(f"{what} ...")
        yield
        self.progress(f"{what}: done in {time.monotonic() - start:.1f} s")

    def _stat_cache(self) -> Path:
        return self.root / "digests.jsonl"

    def file_digests(self, files: Sequence[Path]) -> dict[Path, str]:
        """The SHA-256 of each file's content, read only when the file is not known by its stat
        key (resolved path, size, mtime, ctime, inode: an in-place edit changes ctime, which cannot
        be set back without root and the clock). Unknown files are hashed several at a time and
        remembered in ``digests.jsonl``: the cache's content keys and the manifest's verification
        share one reading of each file, and a later run reads none that is unchanged. With
        ``trust_digests_since`` (``--vla-rehash``), only digests recorded since then are used: every
        file is read once more in this run, whatever its stat key says."""
        known: dict[str, str] = {}
        stat_file = self._stat_cache()
        since = self.trust_digests_since
        if stat_file.is_file():
            for line in stat_file.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError, KeyError, TypeError):  # a damaged line is recomputed
                    rec = json.loads(line)
                    if since is None or float(rec.get("at", 0)) >= since:
                        known[str(rec["stat"])] = str(rec["sha256"])
        keys = {}
        for f in files:
            st = f.stat()
            keys[f] = f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}"
        out = {f: known[k] for f, k in keys.items() if k in known}
        missing = [f for f in files if f not in out]
        if missing:
            with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
                out |= dict(zip(missing, pool.map(sha256_file, missing), strict=True))
            self.root.mkdir(parents=True, exist_ok=True)
            with _locked(self.root / "digests.lock"), stat_file.open("a") as log:
                now = time.time()
                log.write("".join(json.dumps({"stat": keys[f], "sha256": out[f], "at": now}) + "\n" for f in missing))
        return out

    def digest(self, *paths: Path, salt: str = "") -> str:
        """SHA-256 over the (relative path, size, content digest) of every file under ``paths``."""
        # artefacts depend on the converter that built them
        h = hashlib.sha256(f"pytest-vla {__version__}|{converter_digest()}|{salt}".encode())
        for top in paths:
            files = [top] if top.is_file() else [top / r for r in release_files(top)]
            digests = self.file_digests(files)
            for f in files:
                rel = f.relative_to(top).as_posix() if f != top else f.name
                h.update(f"{rel}\t{f.stat().st_size}\t{digests[f]}\n".encode())
        return h.hexdigest()[:32]

    def build(self, key: str, name: str, builder: Callable[[Path], object]) -> Path:
        """The artefact ``name`` for ``key``, built by ``builder(dst)`` if not there yet."""
        dst = self.root / key / name
        if dst.exists():
            return dst
        with _locked(self.root / key / f".{name}.lock"):
            if not dst.exists():
                with self.step(f"building {name}"):
                    builder(dst)
        os.utime(dst)  # most recently used
        return dst
