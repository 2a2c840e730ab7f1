"""Verifying release.json: listing, paths, sizes and hashes; the manifest command."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from vla_reference.cli import main
from vla_reference.errors import LayoutError
from vla_reference.release import (
    build_manifest,
    check_paths,
    escapes,
    listed_files,
    mismatch_table,
    read_manifest,
    scan_release,
    verify_manifest,
    write_manifest,
)

from conftest import GOLDEN


@pytest.fixture
def rel(tmp_path):
    root = tmp_path / "r"
    (root / "model").mkdir(parents=True)
    (root / "model" / "a.txt").write_text("a\n")
    (root / "b.bin").write_bytes(b"\0" * 3_000_000)  # more than one 1 MiB chunk
    write_manifest(root, name="r", version="1.0.0")
    return root


@pytest.mark.parametrize(
    ("path", "escaping"),
    [
        ("model/a.txt", False),
        ("../x", True),
        ("/etc/passwd", True),
        ("a/../../x", True),
        ("a\\b", True),
        ("C:/x", True),
        ("", True),
        ("a//b", True),
        ("./a", False),
    ],
)
def test_escapes(path, escaping):
    assert escapes(path) is escaping


def test_clean_release(rel):
    assert verify_manifest(rel) == ([], [])


def test_every_problem_at_once(rel):
    m = read_manifest(rel)
    m["files"]["gone.txt"] = {"size": 1, "sha256": "0" * 64}
    m["files"]["bad.txt"] = {"size": "1", "sha256": "0" * 64}
    (rel / "release.json").write_text(json.dumps(m))
    (rel / "new.txt").write_text("new\n")
    (rel / "model" / "a.txt").write_text("b\n")  # same size, other bytes
    (rel / "b.bin").write_bytes(b"\1")
    problems, rows = verify_manifest(rel)
    assert sorted(p.what for p in problems) == [
        "file not in the manifest",
        "listed file missing",
        "malformed manifest entry",
    ]
    assert [(r.path, r.actual_sha256 is None) for r in rows] == [("b.bin", True), ("model/a.txt", False)]
    table = mismatch_table(rows).splitlines()
    assert table[0].split() == ["file", "listed", "size", "actual", "size", "listed", "sha256", "actual", "sha256"]
    assert table[1].split()[:3] == ["b.bin", "3000000", "1"] and table[1].endswith("(not hashed)")


def test_ignored_parts(rel):
    (rel / ".git").mkdir()
    (rel / ".git" / "HEAD").write_text("ref\n")
    (rel / "model" / "__pycache__").mkdir()
    (rel / "model" / "__pycache__" / "x.pyc").write_bytes(b"")
    (rel / ".DS_Store").write_bytes(b"")
    assert scan_release(rel).files == ["b.bin", "model/a.txt"]


def test_symlinks(rel, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    os.symlink(outside, rel / "model" / "out.txt")
    os.symlink(tmp_path, rel / "model" / "outdir")
    os.symlink(rel / "model" / "a.txt", rel / "inside.txt")
    os.symlink(rel / "nowhere", rel / "dangling.txt")
    tree = scan_release(rel)
    assert "inside.txt" in tree.files
    assert sorted(r for r, _ in tree.outside) == ["dangling.txt", "model/out.txt", "model/outdir"]
    listed, _ = listed_files(read_manifest(rel), path=rel / "release.json")
    assert sorted((p.what, p.key) for p in check_paths(rel, listed, tree)) == [
        ("symlink leads nowhere", "dangling.txt"),
        ("symlink leaves the release", "model/out.txt"),
        ("symlink leaves the release", "model/outdir"),
    ]
    with pytest.raises(LayoutError, match=r"symlink leaves the release .*Fix: replace the link"):
        build_manifest(rel, {})


def test_no_files_key(rel):
    listed, problems = listed_files({"name": "x"}, path=rel / "release.json")
    assert listed == {} and problems[0].render().startswith("manifest lists no files: no 'files'")


def test_cli_manifest(tmp_path, capsys):
    release = tmp_path / "g"
    shutil.copytree(GOLDEN / "dense", release)
    assert main(["manifest", str(release), "--check"]) == 0
    (release / "scripts" / "run_pretrain.sh").write_text("#!/bin/bash\n")
    assert main(["manifest", str(release), "--check"]) == 1
    out = capsys.readouterr().out
    assert "size differs:" in out and "scripts/run_pretrain.sh" in out and "listed size" in out
    assert main(["manifest", str(release), "--version", "1.1.0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"restated version 1.1.0 in {release / 'model/README.md'}", out
    assert out[1].startswith(f"wrote {release / 'release.json'}: "), out
    manifest = read_manifest(release)
    assert manifest["version"] == "1.1.0" and manifest["name"] == "VLA-Driver-Tiny-Dense"
    card = (release / "model/README.md").read_text()
    assert "version: 1.1.0\n" in card and "# VLA-Driver-Tiny-Dense v1.1.0\n" in card and "v1.0.0" not in card
    assert main(["manifest", str(release), "--check"]) == 0
    assert main(["manifest", str(release), "--version", "1.1"]) == 2
    assert main(["manifest", str(release), "--date", "2026-13-01"]) == 2
    assert main(["manifest", str(tmp_path / "none")]) == 1
