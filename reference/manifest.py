"""``release.json``: the integrity manifest (every file's size and SHA-256) and the tokenizer checksum.

Tokenizer checksum (documented in docs/release-format.md): SHA-256 over the lines
``"<path>\\t<sha256 of file>\\n"`` of the package files present in ``model/``, sorted by path,
with paths relative to the release root.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

from ._fs import atomic_write_bytes
from .errors import MalformedFileError
from .tokenizer import TOKENIZER_FILES

__all__ = [
    "MANIFEST",
    "sha256_file",
    "release_files",
    "tokenizer_checksum",
    "build_manifest",
    "write_manifest",
    "IGNORED_PARTS",
]

MANIFEST: Final = "release.json"
_CHUNK: Final = 1 << 20
# version-control and cache directories are not part of a release
IGNORED_PARTS: Final = frozenset({".git", ".hg", ".svn", "__pycache__", ".pytest_cache", ".DS_Store"})


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def release_files(root: Path) -> list[str]:
    """Every regular file of the release (relative POSIX paths), except the manifest itself."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in IGNORED_PARTS)
        for name in filenames:
            if name in IGNORED_PARTS:
                continue
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            if rel != MANIFEST:
                out.append(rel)
    return sorted(out)


def hash_files(root: Path, rels: Iterable[str], *, workers: int = 4) -> dict[str, str]:
    rels = list(rels)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip(rels, pool.map(lambda r: sha256_file(root / r), rels), strict=True))


def tokenizer_checksum(root: Path, hashes: dict[str, str] | None = None) -> str:
    """The tokenizer package checksum (see the module docstring)."""
    lines = []
    for name in TOKENIZER_FILES:
        rel = f"model/{name}"
        if (root / rel).is_file():
            digest = hashes[rel] if hashes and rel in hashes else sha256_file(root / rel)
            lines.append(f"{rel}\t{digest}\n")
    return "sha256:" + hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()


def build_manifest(root: Path, base: dict[str, Any]) -> dict[str, Any]:
    rels = release_files(root)
    hashes = hash_files(root, rels)
    manifest = dict(base)
    manifest["tokenizer_checksum"] = tokenizer_checksum(root, hashes)
    manifest["files"] = {r: {"size": (root / r).stat().st_size, "sha256": hashes[r]} for r in rels}
    return manifest


def read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MalformedFileError(f"cannot read the manifest: {e}", path=path, fix="run `vla-release manifest`") from e
    if not isinstance(data, dict):
        raise MalformedFileError("the manifest is not a JSON object", path=path)
    return data


def write_manifest(root: Path, **fields: Any) -> dict[str, Any]:
    """Write or refresh ``release.json``: keeps name/version/date, recomputes files and checksum."""
    base: dict[str, Any] = {}
    if (root / MANIFEST).is_file():
        base = {k: v for k, v in read_manifest(root).items() if k not in ("files", "tokenizer_checksum")}
    base.update({k: v for k, v in fields.items() if v is not None})
    manifest = build_manifest(root, base)
    atomic_write_bytes(root / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    return manifest


__all__ += ["read_manifest", "hash_files"]
