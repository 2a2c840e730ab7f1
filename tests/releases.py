"""Helpers on whole releases: two releases built from the same inputs are the same release (every
pure file byte for byte, the computed ones, docs/release-format.md, within their tolerance); a
failure's printed fix, run as a user runs it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from vla_reference.golden import computed
from vla_reference.parity import compare_logits, default_tolerance, format_table
from vla_reference.preprocessing import SNAPSHOT_SUFFIX, compare, parse
from vla_reference.release import read_manifest, release_files


def without_computed(manifest: dict) -> dict:
    return {**manifest, "files": {k: v for k, v in manifest["files"].items() if not computed(k)}}


def assert_same_logits(name: str, committed: Path, fresh: Path) -> None:
    want = load_file(committed / "golden/expected_logits.safetensors")
    got = load_file(fresh / "golden/expected_logits.safetensors")
    assert sorted(got) == sorted(want)
    stats = [compare_logits(k, got[k], want[k], default_tolerance(torch.float32)) for k in sorted(want)]
    assert all(s.within for s in stats), f"{name}:\n{format_table(stats)}"
    for k in want:
        assert torch.equal(got[k].argmax(-1), want[k].argmax(-1)), f"{name}: top-1 of {k} changed"


def assert_same_snapshot(rel: str, committed: Path, fresh: Path) -> None:
    want, got = (committed / rel).read_text(), (fresh / rel).read_text()
    assert parse(got)[0] == parse(want)[0], f"{rel}: header differs"
    assert compare(got, want) == [], rel


def assert_same_release(name: str, committed: Path, fresh: Path) -> None:
    """``fresh`` is ``committed`` rebuilt: same files, pure ones byte for byte, release.json but
    for the computed files' entries, snapshots and logits within their tolerance."""
    assert release_files(committed) == release_files(fresh)
    for rel in release_files(committed):
        if rel.endswith(SNAPSHOT_SUFFIX):
            assert_same_snapshot(rel, committed, fresh)
        elif not computed(rel):
            assert (committed / rel).read_bytes() == (fresh / rel).read_bytes(), f"{name}/{rel} differs"
    assert without_computed(json.loads((fresh / "release.json").read_text())) == without_computed(
        read_manifest(committed)
    )
    assert_same_logits(name, committed, fresh)


def run_printed_fix(message: str, release: Path) -> str:
    """Run the fix a failure prints as ``in the release: `CMD``` the way a user would: a shell in
    the release directory, with this environment's commands (``vla-release``, ``pytest``) on
    PATH. Asserts there is one and it exits 0; returns the command."""
    __tracebackhide__ = True
    fix = re.search(r"in the release: `([^`]+)`", message)
    assert fix, f"no runnable fix in: {message}"
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]}
    done = subprocess.run(fix.group(1), shell=True, cwd=release, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{fix.group(1)}: {done.stdout}{done.stderr}"
    return fix.group(1)


def write_png_bomb(path: Path, side: int) -> int:
    """A valid greyscale PNG of ``side`` x ``side`` zero pixels: a few MB on disk, ``side**2``
    bytes once decoded. The deflate stream is one full-flush block of zeros repeated (each block
    stands alone, so repeating its bytes repeats its output), ended by an empty final block.
    Returns the decoded size in bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = side * (side + 1)  # each row: a filter byte (0) and its pixels
    rows = 1024
    block = zlib.compressobj(9, wbits=-15)
    body = block.compress(bytes((side + 1) * rows)) + block.flush(zlib.Z_FULL_FLUSH)
    tail = zlib.compressobj(9, wbits=-15)
    rest = tail.compress(bytes(raw - (side // rows) * (side + 1) * rows)) + tail.flush(zlib.Z_FINISH)
    adler = ((raw % 65521) << 16) | 1  # adler32 of n zero bytes: a stays 1, b is n mod 65521
    stream = b"\x78\xda" + body * (side // rows) + rest + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", stream) + chunk(b"IEND", b""))
    return side * side
