"""The per-run state of pytest-vla, kept in the config's stash."""

from __future__ import annotations

import importlib.util
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pytest

from vla_reference.release import Release

from .cache import ArtefactCache
from .options import VLAOptions

__all__ = ["AREAS", "VLASession", "SESSION_KEY", "SUITE_DIR"]

AREAS: Final[dict[str, str]] = {
    "checkpoint": "Megatron checkpoint layout, replicas, merge equality, reshard round trips",
    "parity": "sharded-vs-merged logit parity on the golden eval set",
    "tokenizer": "tokenizer package checksum and added-token IDs",
    "preprocessing": "VLAProcessor snapshots and preprocessing properties",
    "card": "model card completeness and honesty",
    "versioning": "semantic versioning against the baseline",
    "manifest": "integrity manifest (sizes and SHA-256 of every file)",
    "reproducibility": "config matrix, Dockerfile, launch script, environment record",
}


def _suite_dir() -> Path:
    """Where the installed suite lies, found without importing it (it imports torch and transformers)."""
    spec = importlib.util.find_spec("vla_conformance")
    if spec is None or not spec.submodule_search_locations:
        raise pytest.UsageError("pytest-vla: the conformance suite (vla_conformance) is not installed")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


SUITE_DIR: Final[Path] = _suite_dir()


@dataclass
class Tally:
    passed: int = 0
    failed: int = 0
    skipped: int = 0


@dataclass
class VLASession:
    options: VLAOptions
    tallies: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    _outcomes: dict[str, tuple[str, str]] = field(default_factory=dict)

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
        return ArtefactCache(self.options.cache_dir)

    def record(self, report: pytest.TestReport) -> None:
        """Fold one phase report into the area tallies (a test counts once, failing wins)."""
        area = next((a for a in AREAS if a in report.keywords), None)
        if area is None:
            return
        outcome = "failed" if report.failed else "skipped" if report.skipped else "passed"
        if report.when == "call" or outcome != "passed":
            previous = self._outcomes.get(report.nodeid)
            if previous is None or previous[1] == "passed" and outcome != "passed":
                self._outcomes[report.nodeid] = (area, outcome)

    def summary(self) -> dict[str, Tally]:
        tallies: dict[str, Tally] = {a: Tally() for a in AREAS}
        for area, outcome in self._outcomes.values():
            t = tallies[area]
            setattr(t, outcome, getattr(t, outcome) + 1)
        return tallies

    def failures(self) -> int:
        return sum(t.failed for t in self.summary().values())

    def verdict(self) -> str:
        release = self.release
        label = release.label if release else "?"
        failed = self.failures()
        ran = sum(t.passed + t.failed for t in self.summary().values())
        if failed:
            return f"{label}: DOES NOT CONFORM ({failed} failure{'s' if failed != 1 else ''})"
        if not ran:
            return f"{label}: NOT CHECKED (no conformance test ran)"
        return f"{label}: CONFORMS"


SESSION_KEY: Final = pytest.StashKey[VLASession]()
