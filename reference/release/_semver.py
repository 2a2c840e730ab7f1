"""Strict Semantic Versioning 2.0.0: parse, order, and measure the bump between two versions.

``parse_version`` accepts exactly the grammar of semver.org (no leading ``v``, no leading zeros,
three numbers); precedence follows its rules (pre-releases sort before their release, build
metadata is ignored). ``bump_between`` says which component a release raised: a pre-release
finalised (``2.0.0-rc.1`` -> ``2.0.0``) counts as the bump of the version it finalises.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from functools import total_ordering
from pathlib import Path
from typing import Final

from ..errors import ReleaseError

__all__ = ["Version", "Bump", "VersionError", "parse_version", "bump_between", "next_version", "required_for"]

# semver.org's own regular expression
_SEMVER: Final = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


class VersionError(ReleaseError):
    """A version string that is not strict SemVer 2.0.0."""


class Bump(enum.IntEnum):
    """How much a version was raised, and how much a change requires."""

    NONE = 0
    PATCH = 1
    MINOR = 2
    MAJOR = 3

    @property
    def label(self) -> str:
        return {
            Bump.NONE: "no bump",
            Bump.PATCH: "a patch bump",
            Bump.MINOR: "a minor bump",
            Bump.MAJOR: "a major bump",
        }[self]


@total_ordering
@dataclass(frozen=True)
class Version:
    """A SemVer 2.0.0 version; ``<`` is SemVer precedence (build metadata ignored)."""

    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    build: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(self.prerelease)
        if self.build:
            text += "+" + ".".join(self.build)
        return text

    @property
    def core(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    def _key(self) -> tuple[tuple[int, int, int], int, tuple[tuple[int, int | str], ...]]:
        # a release sorts after all its pre-releases; numeric identifiers before alphanumeric ones
        pre = tuple((0, int(p)) if p.isdigit() else (1, p) for p in self.prerelease)
        return (self.core, 0 if self.prerelease else 1, pre)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


def _why(text: str) -> str:
    if text != text.strip():
        return "surrounding whitespace"
    if text[:1] in "vV" and _SEMVER.match(text[1:]):
        return f"leading {text[0]!r}"
    core = re.split(r"[-+]", text, maxsplit=1)[0]
    parts = core.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return "MAJOR.MINOR.PATCH needs exactly three numbers"
    if any(len(p) > 1 and p.startswith("0") for p in parts):
        return "leading zeros"
    return "invalid pre-release or build identifiers"


def parse_version(text: object, *, path: str | Path | None = None, key: str | None = "version") -> Version:
    """Parse a strict SemVer 2.0.0 version; VersionError says why not and what to write.

    Example:
        >>> parse_version("1.10.0-rc.1") < parse_version("1.10.0")
        True
    """
    if not isinstance(text, str):
        raise VersionError(
            f"version is {text!r} ({type(text).__name__}), not a string",
            path=path,
            key=key,
            fix='write the version as a JSON string, e.g. "1.0.0"',
        )
    m = _SEMVER.match(text)
    if m is None:
        fixed = text.strip().lstrip("vV")
        hint = f'write "{fixed}"' if _SEMVER.match(fixed) else 'write MAJOR.MINOR.PATCH, e.g. "1.0.0"'
        raise VersionError(
            f"version {text!r} is not strict SemVer 2.0.0 ({_why(text)})",
            path=path,
            key=key,
            fix=hint,
        )
    major, minor, patch, pre, build = m.groups()
    return Version(
        int(major),
        int(minor),
        int(patch),
        tuple(pre.split(".")) if pre else (),
        tuple(build.split(".")) if build else (),
    )


def bump_between(old: Version, new: Version) -> Bump:
    """Which component ``new`` raised over ``old`` (NONE when it is not greater).

    Finalising or advancing a pre-release of the same version counts as the bump that version
    is over its predecessor: ``2.0.0-rc.1`` -> ``2.0.0`` is a major bump, ``1.1.0-rc.1`` -> ``1.1.0``
    a minor one.
    """
    if not new > old:
        return Bump.NONE
    if new.major != old.major:
        return Bump.MAJOR
    if new.minor != old.minor:
        return Bump.MINOR
    if new.patch != old.patch:
        return Bump.PATCH
    if old.minor == 0 and old.patch == 0:
        return Bump.MAJOR
    return Bump.MINOR if old.patch == 0 else Bump.PATCH


def required_for(old: Version, change: Bump) -> Bump:
    """The bump a change requires from ``old``: in ``0.y.z`` each requirement moves down one level.

    SemVer says anything may change in 0.y.z; like Cargo and npm's caret, a breaking change there
    needs a minor bump and anything else a patch bump.
    """
    if old.major == 0 and change > Bump.PATCH:
        return Bump(change - 1)
    return change


def next_version(old: Version, bump: Bump) -> Version:
    """The smallest release ``bump`` above ``old`` (what to release instead)."""
    if bump is Bump.MAJOR:
        return Version(old.major + 1, 0, 0)
    if bump is Bump.MINOR:
        return Version(old.major, old.minor + 1, 0)
    if old.prerelease:
        return Version(*old.core)
    return Version(old.major, old.minor, old.patch + 1)
