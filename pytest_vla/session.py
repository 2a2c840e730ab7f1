"""The per-run state of pytest-vla, kept in the config's stash."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pytest

from vla_reference.release import Release

from .cache import ArtefactCache
from .options import VLAOptions
from .results import CheckResult, Results

__all__ = ["AREAS", "VLASession", "SESSION_KEY", "SUITE_DIR", "PARTIAL_EXIT"]

AREAS: Final[dict[str, str]] = {
    "checkpoint": "Megatron checkpoint layout, replicas, merge equality, reshard round trips",
    "parity": "sharded-vs-merged logit parity on the golden eval set",
    "tokenizer": "tokenizer package checksum and added-token IDs",
    "preprocessing": "VLAProcessor snapshots and preprocessing properties",
    "card": "model card completeness and honesty",
    "versioning": "semantic versioning against the baseline",
    "manifest": "integrity manifest (sizes and SHA-256 of every file)",
    "reproducibility": "config matrix, Dockerfile, launch script, environment record",
    "examples": "the release's demos: present, parse, stock imports, the shipped processor (run: --vla-run-examples)",
}


def _suite_dir() -> Path:
    """Where the installed suite lies, found without importing it (it imports torch and transformers)."""
    spec = importlib.util.find_spec("vla_conformance")
    if spec is None or not spec.submodule_search_locations:
        raise pytest.UsageError("pytest-vla: the conformance suite (vla_conformance) is not installed")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


SUITE_DIR: Final[Path] = _suite_dir()


# the exit status of a run where nothing failed but some areas were not checked (unless
# --vla-allow-partial): a gate must not pass a release it did not look at
PARTIAL_EXIT: Final = 8


@dataclass
class Tally:
    passed: int = 0
    failed: int = 0
    skipped: int = 0


@dataclass
class VLASession:
    options: VLAOptions
    results: Results = field(default_factory=lambda: Results(tuple(AREAS)))
    interrupted: str | None = None  # why the run stopped early, if it did
    not_checked: str = "deselected"  # why an area with no collected check was not checked
    progress: Callable[[str], None] | None = None  # where long steps are told (a terminal only)
    started: float = field(default_factory=time.time)  # --vla-rehash trusts digests from here on

    @property
    def active(self) -> bool:
        return self.options.release is not None

    @property
    def release(self) -> Release | None:
        return Release(self.options.release) if self.options.release else None

    @property
    def baseline(self) -> Release | None:
        return Release(self.options.baseline) if self.options.baseline else None

    @property
    def cache(self) -> ArtefactCache:
        return ArtefactCache(
            self.options.cache_dir, self.progress, trust_digests_since=self.started if self.options.rehash else None
        )

    def summary(self) -> dict[str, Tally]:
        tallies: dict[str, Tally] = {a: Tally() for a in AREAS}
        for check in self.results.in_area():
            t = tallies[check.area or ""]
            setattr(t, check.status, getattr(t, check.status) + 1)
        return tallies

    def failed_checks(self) -> list[CheckResult]:
        return sorted((c for c in self.results.in_area() if c.status == "failed"), key=lambda c: c.rule or c.nodeid)

    def coverage(self) -> dict[str, str | None]:
        """Per area: None when it was checked (a check ran), else why not."""
        out: dict[str, str | None] = {}
        for area in AREAS:
            checks = [c for c in self.results.in_area() if c.area == area]
            if not checks:
                out[area] = self.not_checked
            elif any(c.status != "skipped" for c in checks):
                out[area] = None
            else:
                out[area] = checks[0].reason or "every check skipped"
        return out

    def verdict_status(self) -> str:
        """``CONFORMS``, ``DOES NOT CONFORM`` or ``NOT CHECKED`` (the JSON report's verdict)."""
        if self.failed_checks():
            return "DOES NOT CONFORM"
        if self.interrupted or all(v is not None for v in self.coverage().values()):
            return "NOT CHECKED"
        return "CONFORMS"

    def partial(self) -> dict[str, str]:
        """The areas not checked in a run that otherwise conforms, with why."""
        if self.verdict_status() != "CONFORMS":
            return {}
        return {a: why for a, why in self.coverage().items() if why is not None}

    def verdict(self) -> str:
        """The one line a reader acts on: what was found, and what was not looked at."""
        release = self.release
        label = release.label if release else "?"
        failed = self.failed_checks()
        if failed:
            ids = sorted({c.rule for c in failed if c.rule})
            which = f": {', '.join(ids)}" if ids else ""
            return f"{label}: DOES NOT CONFORM ({len(failed)} failure{'s' if len(failed) != 1 else ''}{which})"
        if self.interrupted:
            return f"{label}: NOT CHECKED (interrupted: {self.interrupted})"
        status = self.verdict_status()
        if status == "NOT CHECKED":
            return f"{label}: NOT CHECKED (no conformance check ran)"
        partial = self.partial()
        if partial:
            reasons: dict[str, list[str]] = {}
            for area, why in partial.items():
                reasons.setdefault(why, []).append(area)
            said = "; ".join(f"{', '.join(areas)} not checked: {why}" for why, areas in reasons.items())
            return f"{label}: CONFORMS (partial: {said})"
        return f"{label}: CONFORMS"


SESSION_KEY: Final = pytest.StashKey[VLASession]()
