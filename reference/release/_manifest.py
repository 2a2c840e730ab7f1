"""``release.json``: the integrity manifest (every file's size and SHA-256) and the tokenizer checksum.

Tokenizer checksum (documented in docs/release-format.md): SHA-256 over the lines
``"<path>\\t<sha256 of file>\\n"`` of the package files present in ``model/``, sorted by path,
with paths relative to the release root.

Verification (as OpenSSF model-signing does per file): every file of the release is listed, every
listed file is there with its size and SHA-256, no listed path leaves the release and no symlink
points out of it. Files are hashed in 1 MiB chunks, several at a time.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Final

from .._fs import MANIFEST, atomic_write_bytes, read_json, sha256_file
from ..errors import LayoutError, MalformedFileError
from ..findings import Finding
from ..tokenizer._build import tokenizer_checksum

__all__ = [
    "MANIFEST",
    "sha256_file",
    "release_files",
    "tokenizer_checksum",
    "build_manifest",
    "write_manifest",
    "IGNORED_PARTS",
]

_CHUNK: Final = 1 << 20
# version-control, editor and cache paths are not part of a release (a path with any of these parts)
IGNORED_PARTS: Final = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        ".bzr",
        "__pycache__",
        ".pytest_cache",
        ".mypy_cache",
        ".ruff_cache",
        ".ipynb_checkpoints",
        ".cache",  # huggingface_hub's download metadata (local_dir/.cache/huggingface)
        ".DS_Store",
        "Thumbs.db",
    }
)
_SHA256: Final = re.compile(r"[0-9a-f]{64}")


def release_files(root: Path) -> list[str]:
    """Every regular file of the release (relative POSIX paths), except the manifest itself."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in IGNORED_PARTS)
        for name in filenames:
            if name in IGNORED_PARTS:
                continue
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            if rel != MANIFEST and _is_regular(Path(dirpath) / name):  # a FIFO or device is never read
                out.append(rel)
    return sorted(out)


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


def hash_files(root: Path, rels: Iterable[str], *, workers: int | None = None) -> dict[str, str]:
    """SHA-256 of each file (relative path -> hex digest), several files at a time."""
    rels = list(rels)
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip(rels, pool.map(lambda r: sha256_file(root / r), rels), strict=True))


def build_manifest(root: Path, base: dict[str, Any]) -> dict[str, Any]:
    """The manifest of ``root``: ``base`` plus the tokenizer checksum and every file's size and SHA-256.

    Refuses (LayoutError) a release with a symlink that leaves it: its content is not the release's.
    """
    tree = scan_release(root)
    if tree.special:
        raise LayoutError(
            "not a regular file (a FIFO, device or socket: reading it would block or never end)",
            path=root / tree.special[0],
            fix="ship the file's contents as a regular file, or remove it",
        )
    if tree.outside:
        rel, target = tree.outside[0]
        raise LayoutError(
            f"symlink leaves the release (-> {target})",
            path=root / rel,
            fix="replace the link with the file itself, or remove it",
        )
    rels = release_files(root)
    hashes = hash_files(root, rels)
    manifest = dict(base)
    manifest["tokenizer_checksum"] = tokenizer_checksum(root, hashes)
    manifest["files"] = {r: {"size": (root / r).stat().st_size, "sha256": hashes[r]} for r in rels}
    return manifest


def read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    try:
        data = read_json(path)
    except MalformedFileError as e:
        detail = e.detail.removeprefix("not valid JSON: ")
        raise MalformedFileError(
            f"cannot read the manifest: {detail}", path=path, fix="run `vla-release manifest`"
        ) from e
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


def refresh_entries(root: Path, prefix: str) -> list[str]:
    """Refresh release.json's ``files`` entries under ``prefix`` (a folder, ``golden/preprocessing/``)
    only: added files listed, removed ones dropped, changed ones re-hashed; every other entry and
    field kept as it is (a stale entry elsewhere stays a finding). Returns the paths changed."""
    manifest = read_manifest(root)
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise MalformedFileError("no 'files' object", path=root / MANIFEST, key="files")
    prefix = prefix.rstrip("/") + "/"
    now = {
        rel: {"sha256": sha256_file(root / rel), "size": (root / rel).stat().st_size}
        for rel in release_files(root)
        if rel.startswith(prefix)
    }
    before = {k: v for k, v in files.items() if k.startswith(prefix)}
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    if changed:
        manifest["files"] = dict(
            sorted({**{k: v for k, v in files.items() if not k.startswith(prefix)}, **now}.items())
        )
        atomic_write_bytes(root / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    return changed


__all__ += ["read_manifest", "hash_files", "refresh_entries"]


# -- verification ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Listed:
    """One well-formed ``files`` entry of release.json."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class FileMismatch:
    """A listed file whose size or SHA-256 is not what release.json says."""

    path: str
    listed_size: int
    actual_size: int
    listed_sha256: str
    actual_sha256: str | None  # None when the sizes already differ (not hashed)


@dataclass
class Tree:
    """What is on disk: the release's files, and the symlinks that leave it (or lead nowhere)."""

    files: list[str] = field(default_factory=list)
    outside: list[tuple[str, str]] = field(default_factory=list)  # (relative path, link target)
    special: list[str] = field(default_factory=list)  # FIFOs, devices, sockets inside the release


def _ignored(rel: str) -> bool:
    return any(part in IGNORED_PARTS for part in rel.split("/"))


def _inside(root: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def scan_release(root: Path) -> Tree:
    """Walk ``root`` (not following directory links): its files, and links that leave it or dangle."""
    tree = Tree()
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if d not in IGNORED_PARTS)
        for name in list(dirnames) + sorted(filenames):
            path = here / name
            rel = path.relative_to(root).as_posix()
            if name in IGNORED_PARTS or rel == MANIFEST:
                continue
            if path.is_symlink():
                target = os.readlink(path)
                if not path.exists() or not _inside(root, path):
                    tree.outside.append((rel, target))
                    continue
            if name in filenames and not _is_regular(path):
                tree.special.append(rel)
            elif name in filenames:
                tree.files.append(rel)
    tree.files.sort()
    return tree


def escapes(rel: str) -> bool:
    """Whether a listed path could leave the release: absolute, ``..``, backslashes, a drive, empty."""
    p = PurePosixPath(rel)
    return (
        not rel
        or p.is_absolute()
        or "\\" in rel
        or re.match(r"^[A-Za-z]:", rel) is not None
        or any(part in ("..", "") for part in rel.split("/"))
    )


def listed_files(manifest: Mapping[str, Any], *, path: Path) -> tuple[dict[str, Listed], list[Finding]]:
    """The well-formed ``files`` entries, and a problem for each malformed one."""
    files = manifest.get("files")
    fix = "regenerate it: in the release: `vla-release manifest .`"
    if not isinstance(files, dict):
        observed = "no 'files'" if files is None else f"'files' is a {type(files).__name__}"
        return {}, [
            Finding("manifest lists no files", observed, "an object {path: {size, sha256}}", path, "files", fix)
        ]
    out: dict[str, Listed] = {}
    problems = []
    for rel, entry in files.items():
        size = entry.get("size") if isinstance(entry, dict) else None
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
            if isinstance(digest, str) and _SHA256.fullmatch(digest):
                out[rel] = Listed(rel, size, digest)
                continue
        bad = []
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            bad.append(f"size {size!r}")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            bad.append(f"sha256 {digest!r}")
        problems.append(
            Finding(
                "malformed manifest entry",
                ", ".join(bad),
                "a byte count and 64 lower-case hex digits",
                path,
                f"files.{rel}",
                fix,
            )
        )
    return out, problems


def check_paths(root: Path, listed: Mapping[str, Listed], tree: Tree) -> list[Finding]:
    """Listed paths that leave the release, and symlinks in it that point outside (or nowhere)."""
    manifest = root / MANIFEST
    problems = [
        Finding(
            "listed path leaves the release",
            repr(rel),
            "a relative path inside the release",
            manifest,
            f"files.{rel}",
            "list only files inside the release, with '/'-separated relative paths",
        )
        for rel in sorted(listed)
        if escapes(rel) or not _inside(root, root / rel)
    ]
    problems += [
        Finding(
            "not a regular file",
            "a FIFO, device or socket (reading it would block or never end)",
            "a regular file",
            root / rel,
            None,
            "ship the file's contents as a regular file, or remove it",
        )
        for rel in tree.special
    ]
    for rel, target in tree.outside:
        dangling = not (root / rel).exists()
        problems.append(
            Finding(
                "symlink leads nowhere" if dangling else "symlink leaves the release",
                f"-> {target}",
                "a regular file inside the release",
                None,  # the link's own path (a Path would be resolved through the link)
                rel,
                "remove the link" if dangling else "replace the link with the file itself",
            )
        )
    return problems


def _checkable(root: Path, listed: Mapping[str, Listed]) -> list[Listed]:
    return [e for rel, e in sorted(listed.items()) if not escapes(rel) and _inside(root, root / rel)]


def check_missing(root: Path, listed: Mapping[str, Listed]) -> list[Finding]:
    """Listed files that are not in the release."""
    return [
        Finding(
            "listed file missing",
            "not in the release",
            f"{e.size} bytes, sha256 {e.sha256[:12]}…",
            root / e.path,
            None,
            "restore the file, or if it was removed: in the release: `vla-release manifest .`",
        )
        for e in _checkable(root, listed)
        if not (root / e.path).is_file()
    ]


def listed_names(manifest: Mapping[str, Any]) -> set[str]:
    """Every path release.json's ``files`` names, well-formed entry or not."""
    files = manifest.get("files")
    return set(files) if isinstance(files, dict) else set()


def check_unlisted(root: Path, listed: Iterable[str], tree: Tree) -> list[Finding]:
    """Files of the release that release.json does not name (version-control and cache paths aside)."""
    listed = set(listed)
    return [
        Finding(
            "file not in the manifest",
            "present but not listed",
            "every file listed with its size and sha256",
            root / rel,
            None,
            "remove the file, or list it: in the release: `vla-release manifest .`",
        )
        for rel in tree.files
        if rel not in listed and not _ignored(rel)
    ]


def find_mismatches(
    root: Path,
    listed: Mapping[str, Listed],
    *,
    workers: int | None = None,
    digests: Callable[[list[Path]], Mapping[Path, str]] | None = None,
) -> list[FileMismatch]:
    """Listed files present with another size or SHA-256 (sizes first: a size mismatch is not
    hashed). ``digests`` (files -> SHA-256 of each) replaces reading them here: the plugin passes
    its artefact cache's, which read each file once per content."""
    present = [e for e in _checkable(root, listed) if (root / e.path).is_file()]
    sizes = {e.path: (root / e.path).stat().st_size for e in present}
    same_size = [e for e in present if sizes[e.path] == e.size]
    if digests is None:
        hashes = hash_files(root, [e.path for e in same_size], workers=workers)
    else:
        found = digests([root / e.path for e in same_size])
        hashes = {e.path: found[root / e.path] for e in same_size}
    out = []
    for e in present:
        actual = hashes.get(e.path)
        if sizes[e.path] != e.size or actual != e.sha256:
            out.append(FileMismatch(e.path, e.size, sizes[e.path], e.sha256, actual))
    return out


def mismatch_table(rows: Iterable[FileMismatch]) -> str:
    """The mismatches as one aligned table: path, listed and actual size, listed and actual SHA-256."""
    rows = list(rows)
    header = ("file", "listed size", "actual size", "listed sha256", "actual sha256")
    cells = [header] + [
        (r.path, str(r.listed_size), str(r.actual_size), r.listed_sha256[:16], (r.actual_sha256 or "(not hashed)")[:16])
        for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    return "\n".join("  ".join(c[i].ljust(widths[i]) for i in range(len(header))).rstrip() for c in cells)


def mismatch_problems(root: Path, rows: Iterable[FileMismatch]) -> list[Finding]:
    """One problem per mismatch (its row of the table)."""
    out = []
    for r in rows:
        if r.actual_size != r.listed_size:
            observed, expected = f"{r.actual_size} bytes", f"{r.listed_size} bytes as listed"
        else:
            observed, expected = f"sha256 {r.actual_sha256}", f"{r.listed_sha256} as listed"
        out.append(
            Finding(
                "size differs" if r.actual_size != r.listed_size else "sha256 differs",
                observed,
                expected,
                root / r.path,
                None,
                "restore the released file, or if the change is intended: in the release: `vla-release manifest .`",
            )
        )
    return out


def verify_manifest(root: Path, *, workers: int | None = None) -> tuple[list[Finding], list[FileMismatch]]:
    """Every check of this module on ``root``: problems (listing, paths) and the mismatch table's rows."""
    listed, problems = listed_files(read_manifest(root), path=root / MANIFEST)
    tree = scan_release(root)
    problems += check_paths(root, listed, tree)
    problems += check_missing(root, listed)
    problems += check_unlisted(root, listed_names(read_manifest(root)), tree)
    return problems, find_mismatches(root, listed, workers=workers)


__all__ += [
    "Listed",
    "FileMismatch",
    "Tree",
    "scan_release",
    "escapes",
    "listed_files",
    "check_paths",
    "check_missing",
    "listed_names",
    "check_unlisted",
    "find_mismatches",
    "mismatch_table",
    "mismatch_problems",
    "verify_manifest",
]
