"""Manifest conformance: release.json lists every file of the release with its size and SHA-256."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from pytest_vla.findings import Findings
from vla_reference.errors import ReleaseError
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
    scan_release,
)

pytestmark = pytest.mark.manifest


def _report(findings: Findings, problems: Iterable[Finding]) -> None:
    __tracebackhide__ = True
    findings.extend(problems)
    findings.check()


def _listed(release: Release, manifest: dict[str, Any]) -> tuple[dict[str, Listed], list[Finding]]:
    return listed_files(manifest, path=release.root / MANIFEST)


def test_manifest_entries_well_formed(vla_release: Release) -> None:
    """release.json is there and parses, and has a 'files' object whose every entry has a byte size
    and a SHA-256 hex digest. (The other checks that read it skip when it is unreadable.)"""
    try:
        manifest = vla_release.manifest
    except ReleaseError as e:
        pytest.fail(f"release.json unreadable: {e}", pytrace=False)
    _, problems = _listed(vla_release, manifest)
    _report(Findings("manifest entries", vla_release.root), problems)


def test_no_listed_file_missing(vla_release: Release, vla_manifest: dict[str, Any]) -> None:
    """Every file release.json lists is in the release."""
    listed, _ = _listed(vla_release, vla_manifest)
    _report(Findings("manifest: missing files", vla_release.root), check_missing(vla_release.root, listed))


def test_no_unlisted_file(vla_release: Release, vla_manifest: dict[str, Any]) -> None:
    """Every file of the release (version-control and cache paths aside) is listed in release.json."""
    names = listed_names(vla_manifest)
    tree = scan_release(vla_release.root)
    _report(Findings("manifest: unlisted files", vla_release.root), check_unlisted(vla_release.root, names, tree))


def test_no_path_leaves_the_release(vla_release: Release, vla_manifest: dict[str, Any]) -> None:
    """No listed path escapes the release (absolute, '..'), and no symlink in it points outside."""
    listed, _ = _listed(vla_release, vla_manifest)
    tree = scan_release(vla_release.root)
    _report(Findings("manifest: paths", vla_release.root), check_paths(vla_release.root, listed, tree))


def test_sizes_and_hashes_match(vla_release: Release, vla_manifest: dict[str, Any]) -> None:
    """Every listed file has the size and SHA-256 release.json records (all mismatches in one table)."""
    __tracebackhide__ = True
    listed, _ = _listed(vla_release, vla_manifest)
    rows = find_mismatches(vla_release.root, listed)
    try:
        _report(Findings("manifest sizes and hashes", vla_release.root), mismatch_problems(vla_release.root, rows))
    except pytest.fail.Exception as e:
        pytest.fail(f"{e.msg}\n\n{mismatch_table(rows)}", pytrace=False)
