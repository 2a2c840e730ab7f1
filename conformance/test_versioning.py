"""Versioning conformance: strict SemVer, greater than the baseline, bumped as much as the changes require."""

from __future__ import annotations

import pytest

from pytest_vla.findings import Findings
from pytest_vla.rules import rule
from vla_reference.errors import ReleaseError
from vla_reference.release import (
    MANIFEST,
    Bump,
    Release,
    Version,
    bump_between,
    diff_releases,
    next_version,
    parse_version,
    required_for,
)

pytestmark = pytest.mark.versioning


def _version(release: Release, findings: Findings) -> Version | None:
    try:
        return parse_version(release.manifest.get("version"), path=release.root / MANIFEST)
    except ReleaseError as e:
        findings.add_error(e, "version")
        return None


def _set_version(version: Version) -> str:
    """The fix that gives the release this version (the card states it too: VLA-CARD-006)."""
    return f"in the release: `vla-release manifest . --version {version}`"


def _needed(release: Release, baseline: Release, old: Version) -> Bump:
    """The bump the changes from the baseline require (PATCH when they cannot be compared: the
    bump check reports that)."""
    try:
        changes = diff_releases(baseline.root, release.root)
    except ReleaseError:
        return Bump.PATCH
    return max((required_for(old, c.bump) for c in changes), default=Bump.PATCH)


def _versions(release: Release, baseline: Release) -> tuple[Version, Version]:
    findings = Findings("versions", release.root)
    old, new = _version(baseline, findings), _version(release, findings)
    if old is None or new is None:
        first = findings.items[0].render(findings.root)
        pytest.skip(f"a version does not parse (reported by test_version_is_strict_semver): {first}")
    return old, new


@rule("VLA-VER-001", fix="write the version as MAJOR.MINOR.PATCH")
@pytest.mark.usefixtures("vla_manifest")  # skips on an unreadable release.json: the manifest area reports it
def test_version_is_strict_semver(vla_release: Release) -> None:
    """release.json's version is strict SemVer 2.0.0 (MAJOR.MINOR.PATCH, no 'v', no leading zeros)."""
    findings = Findings("release version", vla_release.root)
    _version(vla_release, findings)
    findings.check()


@rule("VLA-VER-002", fix="give the release a version above the baseline's")
def test_version_greater_than_baseline(vla_release: Release, vla_baseline: Release) -> None:
    """The release's version is greater than the baseline's (SemVer precedence)."""
    old, new = _versions(vla_release, vla_baseline)
    findings = Findings("version vs baseline", vla_release.root)
    if not new > old:
        findings.add(
            "version not greater than the baseline",
            str(new),
            f"greater than {old} (baseline {vla_baseline.root.name})",
            file=vla_release.root / MANIFEST,
            key="version",
            fix=_set_version(next_version(old, max(_needed(vla_release, vla_baseline, old), Bump.PATCH))),
        )
    findings.check()


@rule("VLA-VER-003", fix="bump at least as much as the changes require (docs/metadata.md)")
def test_version_bump_covers_changes(vla_release: Release, vla_baseline: Release) -> None:
    """The bump over the baseline is at least what the changes require: architecture major, weights or
    tokenizer minor, anything else patch."""
    old, new = _versions(vla_release, vla_baseline)
    findings = Findings(f"version bump {old} -> {new}", vla_release.root)
    if not new > old:
        pytest.skip(f"{new} is not greater than {old} (reported by test_version_greater_than_baseline)")
    try:
        changes = diff_releases(vla_baseline.root, vla_release.root)
    except ReleaseError as e:
        findings.fail_on(e, "cannot compare with the baseline")
    have = bump_between(old, new)
    need = max((required_for(old, c.bump) for c in changes), default=Bump.NONE)
    for change in changes:
        required = required_for(old, change.bump)
        if required > have:
            findings.add(
                f"{change.kind.value} changed, which requires {required.label}",
                f"{change.summary}; {old} -> {new} is {have.label}",
                f"at least {required.label}",
                file=vla_release.root / change.path,
                key=change.key,
                fix=_set_version(next_version(old, need)),
            )
    findings.check()
