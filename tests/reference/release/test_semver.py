"""Strict SemVer 2.0.0: parsing with reasons, precedence, bumps."""

from __future__ import annotations

import pytest

from vla_reference.release import Bump, VersionError, bump_between, next_version, parse_version, required_for


@pytest.mark.parametrize(
    "text",
    [
        "0.0.4",
        "1.2.3",
        "10.20.30",
        "1.1.2-prerelease+meta",
        "1.0.0-alpha.1",
        "1.0.0+21AF26D3----117B344092BD",
        "2.0.0-rc.1+build.123",
    ],
)
def test_valid(text):
    assert str(parse_version(text)) == text


@pytest.mark.parametrize(
    ("text", "why", "fix"),
    [
        ("v1.0.0", r"leading 'v'", 'write "1.0.0"'),
        ("1.0", "MAJOR.MINOR.PATCH needs exactly three numbers", 'write MAJOR.MINOR.PATCH, e.g. "1.0.0"'),
        ("01.0.0", "leading zeros", "write MAJOR.MINOR.PATCH"),
        ("1.0.0-01", "invalid pre-release or build identifiers", "write MAJOR.MINOR.PATCH"),
        (" 1.0.0", "surrounding whitespace", 'write "1.0.0"'),
        ("1.0.0-", "invalid pre-release or build identifiers", "write MAJOR.MINOR.PATCH"),
    ],
)
def test_invalid_says_why(text, why, fix):
    with pytest.raises(
        VersionError,
        match=rf"version {text!r} is not strict SemVer 2.0.0 \({why}\) \[release.json:version\]. Fix: {fix}",
    ):
        parse_version(text, path="release.json")


def test_not_a_string():
    with pytest.raises(VersionError, match=r"version is 1.0 \(float\), not a string"):
        parse_version(1.0)


def test_precedence_as_semver_org_lists_it():
    order = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "2.0.0",
        "2.1.0",
        "2.1.1",
        "10.0.0",
    ]
    versions = [parse_version(v) for v in order]
    assert sorted(reversed(versions)) == versions
    assert parse_version("1.0.0+a") == parse_version("1.0.0+b")  # build metadata has no precedence


@pytest.mark.parametrize(
    ("old", "new", "bump"),
    [
        ("1.0.0", "2.0.0", Bump.MAJOR),
        ("1.0.0", "1.1.0", Bump.MINOR),
        ("1.0.0", "1.0.1", Bump.PATCH),
        ("1.0.0", "1.0.0", Bump.NONE),
        ("1.2.0", "1.1.9", Bump.NONE),
        ("2.0.0-rc.1", "2.0.0", Bump.MAJOR),
        ("1.1.0-rc.1", "1.1.0", Bump.MINOR),
        ("1.0.1-rc.1", "1.0.1", Bump.PATCH),
        ("1.0.0", "1.0.0+build.2", Bump.NONE),
    ],
)
def test_bump_between(old, new, bump):
    assert bump_between(parse_version(old), parse_version(new)) is bump


def test_major_zero_moves_requirements_down():
    zero, one = parse_version("0.3.1"), parse_version("1.3.1")
    assert required_for(zero, Bump.MAJOR) is Bump.MINOR and required_for(zero, Bump.MINOR) is Bump.PATCH
    assert required_for(zero, Bump.PATCH) is Bump.PATCH and required_for(one, Bump.MAJOR) is Bump.MAJOR


@pytest.mark.parametrize(
    ("old", "bump", "new"),
    [
        ("1.2.3", Bump.MAJOR, "2.0.0"),
        ("1.2.3", Bump.MINOR, "1.3.0"),
        ("1.2.3", Bump.PATCH, "1.2.4"),
        ("1.3.0-rc.1", Bump.PATCH, "1.3.0"),
    ],
)
def test_next_version(old, bump, new):
    assert str(next_version(parse_version(old), bump)) == new
