"""Manifest conformance: release.json lists every file of the release with its size and SHA-256."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from pytest_vla.cache import ArtefactCache
from pytest_vla.findings import Findings, FindingsFailed
from pytest_vla.results import measure
from pytest_vla.rules import rule
from pytest_vla.snapshots import skip_while_updating
from vla_reference.errors import LayoutError, ReleaseError
from vla_reference.findings import Finding
from vla_reference.release import (
    MANIFEST,
    Listed,
    Release,
    check_missing,
    check_paths,
    check_unlisted,
    find_mismatches,
    listed_files,
    listed_names,
    mismatch_problems,
    mismatch_table,
    remote_code,
    scan_release,
)

pytestmark = pytest.mark.manifest


def _report(findings: Findings, problems: Iterable[Finding]) -> None:
    __tracebackhide__ = True
    findings.extend(problems)
    findings.check()


def _listed(release: Release, manifest: dict[str, Any]) -> tuple[dict[str, Listed], list[Finding]]:
    return listed_files(manifest, path=release.root / MANIFEST)


NOT_A_RELEASE_FIX = (
    "lay the parts out as docs/release-format.md describes (the Hugging Face directory as model/, the "
    "Megatron checkpoint as checkpoint/, the golden eval set under golden/), then write release.json: "
    "in the release: `vla-release manifest .`"
)


@rule("VLA-MAN-006", fix=NOT_A_RELEASE_FIX)
def test_directory_is_a_release(vla_release: Release) -> None:
    """The directory is a release: it has release.json or model/. When it has neither, this is the
    one check that runs (pytest-vla deselects the others: one defect, one message)."""
    what = vla_release.not_a_release()
    if what is not None:
        Findings("not a release", vla_release.root).fail_on(
            LayoutError(
                f"this is {what}, not a release: it has neither release.json nor model/",
                path=vla_release.root,
                fix=NOT_A_RELEASE_FIX,
            ),
            "not a release",
        )


@rule(
    "VLA-MAN-007",
    fix="remove auto_map from model/*.json and any code file from model/: a release loads in stock transformers",
)
def test_no_code_in_the_release(vla_release: Release, vla_model_dir: Path) -> None:
    """No config asks for remote code (auto_map) and model/ holds no Python or native code: loading
    the release runs nothing it ships (the plugin never passes trust_remote_code)."""
    _report(Findings("code in the release", vla_release.root), remote_code(vla_model_dir))


@rule("VLA-MAN-001", fix="regenerate release.json: in the release: `vla-release manifest .`")
def test_manifest_entries_well_formed(vla_release: Release) -> None:
    """release.json is there and parses, and has a 'files' object whose every entry has a byte size
    and a SHA-256 hex digest. (The other checks that read it skip when it is unreadable.)"""
    try:
        manifest = vla_release.manifest
    except ReleaseError as e:
        Findings("release.json", vla_release.root).fail_on(e, "release.json unreadable")
    _, problems = _listed(vla_release, manifest)
    _report(Findings("manifest entries", vla_release.root), problems)


@rule("VLA-MAN-002", fix="restore the file, or refresh release.json if it was removed on purpose")
def test_no_listed_file_missing(
    vla_release: Release, vla_manifest: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    """Every file release.json lists is in the release."""
    skip_while_updating(request.config)
    listed, _ = _listed(vla_release, vla_manifest)
    _report(Findings("manifest: missing files", vla_release.root), check_missing(vla_release.root, listed))


@rule("VLA-MAN-003", fix="remove the file, or list it: in the release: `vla-release manifest .`")
def test_no_unlisted_file(vla_release: Release, vla_manifest: dict[str, Any], request: pytest.FixtureRequest) -> None:
    """Every file of the release (version-control and cache paths aside) is listed in release.json."""
    skip_while_updating(request.config)
    names = listed_names(vla_manifest)
    tree = scan_release(vla_release.root)
    _report(Findings("manifest: unlisted files", vla_release.root), check_unlisted(vla_release.root, names, tree))


@rule("VLA-MAN-004", fix="keep every listed path and symlink inside the release")
def test_no_path_leaves_the_release(vla_release: Release, vla_manifest: dict[str, Any]) -> None:
    """No listed path escapes the release (absolute, '..'), and no symlink in it points outside."""
    listed, _ = _listed(vla_release, vla_manifest)
    tree = scan_release(vla_release.root)
    _report(Findings("manifest: paths", vla_release.root), check_paths(vla_release.root, listed, tree))


@rule("VLA-MAN-005", fix="restore the shipped bytes, or refresh release.json after a deliberate change")
def test_sizes_and_hashes_match(
    vla_release: Release, vla_manifest: dict[str, Any], vla_artefacts: ArtefactCache, request: pytest.FixtureRequest
) -> None:
    """Every listed file has the size and SHA-256 release.json records (all mismatches in one table)."""
    skip_while_updating(request.config)
    __tracebackhide__ = True
    listed, _ = _listed(vla_release, vla_manifest)
    # the cache's digests: one reading of each file per content, shared with the artefacts' keys
    rows = find_mismatches(vla_release.root, listed, digests=vla_artefacts.file_digests)
    measure(request.node, "hash_mismatches", [dataclasses.asdict(r) for r in rows])
    try:
        _report(Findings("manifest sizes and hashes", vla_release.root), mismatch_problems(vla_release.root, rows))
    except FindingsFailed as e:
        raise FindingsFailed(f"{e.msg}\n\n{mismatch_table(rows)}", e.findings, e.root) from None
