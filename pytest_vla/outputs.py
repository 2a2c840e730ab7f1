"""What a run leaves for readers who were not at the terminal: the JSON report, the HTML report,
and the verdict, release name and version as JUnit XML properties.

Written by the controller at session finish (also after an interrupt, saying so), each file
atomically: a reader never sees half a report.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
from pathlib import Path
from typing import Any, Final

import pytest
import torch

from vla_reference.errors import ReleaseError

from . import __version__
from .session import AREAS, VLASession

__all__ = ["SCHEMA_VERSION", "SCHEMA_FILE", "build_report", "to_json", "write_outputs"]

SCHEMA_VERSION: Final = "1.0"
SCHEMA_FILE: Final = Path(__file__).with_name("report.schema.json")
_LIBRARIES: Final = (
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "numpy",
    "megatron-core",
    "pytest",
    "pytest-xdist",
    "syrupy",
)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """The machine and the libraries a verdict was reached with."""
    libraries = {"pytest-vla": __version__, **{d: _version(d) for d in _LIBRARIES}}
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "libraries": {k: v for k, v in libraries.items() if v is not None},
    }


def _release(session: VLASession, *, baseline: bool = False) -> dict[str, Any] | None:
    release = session.baseline if baseline else session.release
    if release is None:
        return None
    out: dict[str, Any] = {"name": release.name, "version": None, "date": None, "path": str(release.root)}
    try:
        manifest = release.manifest
        out["version"] = manifest.get("version") if isinstance(manifest.get("version"), str) else None
        out["date"] = manifest.get("date") if isinstance(manifest.get("date"), str) else None
    except ReleaseError:
        pass
    return out


def _options(config: pytest.Config, session: VLASession) -> dict[str, Any]:
    o = session.options
    return {
        "release": str(o.release) if o.release else None,
        "baseline": str(o.baseline) if o.baseline else None,
        "cache_dir": str(o.cache_dir),
        "logit_atol": o.logit_atol,
        "logit_rtol": o.logit_rtol,
        "logit_kl": o.logit_kl,
        "logit_top1": o.logit_top1,
        "allow_partial": o.allow_partial,
        "markexpr": config.option.markexpr or None,
        "keyword": config.option.keyword or None,
        "workers": getattr(config.option, "numprocesses", None),
        "args": [str(a) for a in config.invocation_params.args],
    }


def build_report(config: pytest.Config, session: VLASession, exit_status: int) -> dict[str, Any]:
    """The JSON report as a dict (schema: ``report.schema.json``)."""
    tallies = session.summary()
    return {
        "schema_version": SCHEMA_VERSION,
        "verdict": session.verdict_status(),
        "verdict_line": session.verdict(),
        "partial": session.partial(),
        "coverage": session.coverage(),
        "interrupted": session.interrupted,
        "exit_status": exit_status,
        "release": _release(session),
        "baseline": _release(session, baseline=True),
        "environment": environment(),
        "options": _options(config, session),
        "summary": {a: vars(tallies[a]) for a in AREAS},
        "checks": [c.to_json() for c in sorted(session.results.in_area(), key=lambda c: c.nodeid)],
    }


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float as None: JSON has no Infinity or NaN (a parity
    statistic of logits whose shapes differ is one)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def to_json(report: dict[str, Any]) -> str:
    """The report as strict JSON (no NaN or Infinity; non-finite numbers are null)."""
    return json.dumps(_finite(report), indent=2, default=str, allow_nan=False) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _junit_properties(config: pytest.Config, report: dict[str, Any]) -> None:
    """The verdict, release name and version on the JUnit XML test suite (two releases checked in
    one CI job are told apart there)."""
    from _pytest.junitxml import xml_key  # the stash key record_testsuite_property uses

    xml = config.stash.get(xml_key, None)
    if xml is None:
        return
    release = report["release"] or {}
    for name, value in (
        ("vla_verdict", report["verdict"]),
        ("vla_verdict_line", report["verdict_line"]),
        ("vla_release_name", release.get("name")),
        ("vla_release_version", release.get("version")),
    ):
        xml.add_global_property(name, "" if value is None else str(value))


def write_outputs(config: pytest.Config, session: VLASession, exit_status: int) -> None:
    """Write every requested report; a report that cannot be written says why on stderr."""
    report = build_report(config, session, exit_status)
    _junit_properties(config, report)
    if session.options.report is not None:
        _write_atomic(session.options.report, to_json(report))
    if session.options.html is not None:
        from .html import render_html

        _write_atomic(session.options.html, render_html(report))
