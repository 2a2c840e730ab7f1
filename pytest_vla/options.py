"""Command-line options and ini keys of pytest-vla, parsed into typed values."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["VLAOptions", "add_options", "read_options"]


def _directory(flag: str) -> Callable[[str], Path]:
    def parse(value: str) -> Path:
        path = Path(value).expanduser()
        if not path.is_dir():
            raise pytest.UsageError(f"{flag}: {value} is not a directory")
        return path.resolve()

    parse.__name__ = flag
    return parse


def _float(flag: str) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise pytest.UsageError(f"{flag}: {value!r} is not a number") from None
        if number < 0:
            raise pytest.UsageError(f"{flag}: {value} must be >= 0")
        return number

    return parse


def _output(flag: str, suffix: str) -> Callable[[str], Path]:
    def parse(value: str) -> Path:
        path = Path(value).expanduser()
        if path.suffix != suffix:
            raise pytest.UsageError(f"{flag}: {value} does not end in {suffix}")
        if path.is_dir():
            raise pytest.UsageError(f"{flag}: {value} is a directory")
        if not path.parent.exists():
            raise pytest.UsageError(f"{flag}: the directory of {value} does not exist")
        return path.absolute()

    return parse


def _cache_dir(value: str) -> Path:
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise pytest.UsageError(f"--vla-cache-dir: {value} is not a directory")
    return path.resolve()


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("vla", "pytest-vla: release conformance")
    group.addoption(
        "--vla-release",
        dest="vla_release",
        metavar="PATH",
        type=_directory("--vla-release"),
        default=None,
        help="release directory to check; runs the installed conformance suite when no test paths are given",
    )
    group.addoption(
        "--vla-baseline",
        dest="vla_baseline",
        metavar="PATH",
        type=_directory("--vla-baseline"),
        default=None,
        help="the release this one derives from (fine-tune checks, version bumps)",
    )
    group.addoption(
        "--vla-cache-dir",
        dest="vla_cache_dir",
        metavar="PATH",
        type=_cache_dir,
        default=None,
        help="where merged/resharded artefacts are cached, keyed by release content "
        "(default: $XDG_CACHE_HOME/pytest-vla or ~/.cache/pytest-vla); never inside the release",
    )
    group.addoption(
        "--vla-rehash",
        dest="vla_rehash",
        action="store_true",
        default=False,
        help="trust no file digest remembered by an earlier run: read and hash every file of the release "
        "again (once per run); for a host where the release's files may be edited by root",
    )
    for flag, what in (
        ("atol", "absolute logit difference"),
        ("rtol", "relative logit difference"),
        ("kl", "mean KL divergence of the softmaxes"),
        ("top1", "minimum top-1 agreement, a fraction"),
    ):
        group.addoption(
            f"--vla-logit-{flag}",
            dest=f"vla_logit_{flag}",
            metavar="X",
            type=_float(f"--vla-logit-{flag}"),
            default=None,
            help=f"parity tolerance: {what} (default by dtype, see docs/parity.md)",
        )
    group.addoption(
        "--vla-report",
        dest="vla_report",
        metavar="PATH.json",
        type=_output("--vla-report", ".json"),
        default=None,
        help="write the JSON report (schema: pytest_vla/report.schema.json), even when the run is interrupted",
    )
    group.addoption(
        "--vla-html",
        dest="vla_html",
        metavar="PATH.html",
        type=_output("--vla-html", ".html"),
        default=None,
        help="write a self-contained HTML report (no network, no script needed to read it)",
    )
    group.addoption(
        "--vla-allow-partial",
        dest="vla_allow_partial",
        action="store_true",
        default=False,
        help="exit 0 when nothing failed but some areas were not checked (deselected, or a part missing)",
    )
    group.addoption(
        "--vla-stream-weights-above",
        dest="vla_stream_weights_above",
        metavar="MIB",
        type=_float("--vla-stream-weights-above"),
        default=1024.0,
        help="parity: a model whose float32 weights exceed MIB runs in transformers one module's weights at a "
        "time, read from the mapped files (default 1024; 0 streams every model)",
    )
    group.addoption(
        "--vla-run-examples",
        dest="vla_run_examples",
        action="store_true",
        default=False,
        help="also run the release's demos (examples/*.py): code from the release, each in a subprocess with a "
        "temporary working directory, a time bound, no network and reads confined to the release",
    )
    group.addoption(
        "--vla-examples-timeout",
        dest="vla_examples_timeout",
        metavar="S",
        type=_float("--vla-examples-timeout"),
        default=300.0,
        help="seconds each demo may run under --vla-run-examples (default 300)",
    )
    group.addoption(
        "--vla-examples-memory",
        dest="vla_examples_memory",
        metavar="MIB",
        type=_float("--vla-examples-memory"),
        default=None,
        help="MiB of private memory each demo may allocate under --vla-run-examples "
        "(default 2048 plus 4x the bytes of model/*.safetensors)",
    )
    parser.addini("vla_release", "release directory to check (as --vla-release)", default="")
    parser.addini("vla_baseline", "baseline release directory (as --vla-baseline)", default="")


@dataclass(frozen=True)
class VLAOptions:
    release: Path | None
    baseline: Path | None
    cache_dir: Path
    logit_atol: float | None = None
    logit_rtol: float | None = None
    logit_kl: float | None = None
    logit_top1: float | None = None
    report: Path | None = None
    html: Path | None = None
    allow_partial: bool = False
    run_examples: bool = False
    examples_timeout: float = 300.0
    examples_memory_mib: float | None = None  # None: 2048 + 4x the model's weight bytes
    rehash: bool = False
    stream_weights_above_mib: float = 1024.0


def read_options(config: pytest.Config) -> VLAOptions:
    """The options as typed values; ini keys fill in flags not given (relative to the ini file)."""
    base = config.inipath.parent if config.inipath else config.rootpath

    def pick(flag: str, dest: str, ini: str) -> Path | None:
        value = config.getoption(dest)
        if value is None and config.getini(ini):
            value = _directory(f"{flag} (ini {ini})")(str(base / str(config.getini(ini))))
        return value

    cache = config.getoption("vla_cache_dir")
    if cache is None:
        root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        cache = Path(root) / "pytest-vla"
    release = pick("--vla-release", "vla_release", "vla_release")
    if release is not None and cache.resolve().is_relative_to(release):
        raise pytest.UsageError(f"--vla-cache-dir: {cache} is inside the release; the release is never written")
    return VLAOptions(
        release=release,
        baseline=pick("--vla-baseline", "vla_baseline", "vla_baseline"),
        cache_dir=cache,
        logit_atol=config.getoption("vla_logit_atol"),
        logit_rtol=config.getoption("vla_logit_rtol"),
        logit_kl=config.getoption("vla_logit_kl"),
        logit_top1=config.getoption("vla_logit_top1"),
        report=config.getoption("vla_report"),
        html=config.getoption("vla_html"),
        allow_partial=config.getoption("vla_allow_partial"),
        run_examples=config.getoption("vla_run_examples"),
        examples_timeout=config.getoption("vla_examples_timeout"),
        examples_memory_mib=config.getoption("vla_examples_memory"),
        rehash=config.getoption("vla_rehash"),
        stream_weights_above_mib=config.getoption("vla_stream_weights_above"),
    )
