"""Fixtures for megatron-core produced checkpoints, loaded by ``pytest_plugins = ["mcore_fixtures"]``.

``mcore_set`` is the directory ``mcore_run.py generate`` writes (one sub-directory per case of
``mcore_cases.CASES``), generated once per machine and cached on disk under a key that changes with
the generator's sources, megatron-core's version and torch's version. ``mcore_forward`` loads a
checkpoint into megatron-core and returns its logits: the producer's judgement of a checkpoint
written by someone else (our converter). megatron-core is a pinned test dependency: when it is
missing these fixtures fail, they never skip.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import filelock
import pytest
import torch
from safetensors.torch import load_file

# isort: split
from mcore_cases import Layout

HERE: Final = Path(__file__).resolve().parent
RUNNER: Final = HERE / "mcore_run.py"
#: Seconds one ``mcore_run.py`` command may take (each launch inside it is bounded separately).
COMMAND_TIMEOUT_S: Final = 900
LAUNCH_TIMEOUT_S: Final = 300
_LOCK_TIMEOUT_S: Final = 1200


class McoreRunError(RuntimeError):
    """``mcore_run.py`` failed; the message carries its command line and stderr."""


def generator_sources() -> list[Path]:
    """The files whose contents decide what ``generate`` writes (``mcore_*.py`` but the fixtures)."""
    return sorted(p for p in HERE.glob("mcore_*.py") if p.name != Path(__file__).name)


def _megatron_core_version() -> str:
    """megatron-core's installed version; fails the test when it is not importable."""
    try:
        version = importlib.metadata.version("megatron-core")
        found = importlib.util.find_spec("megatron.core") is not None
    except (importlib.metadata.PackageNotFoundError, ModuleNotFoundError):
        version, found = "", False
    if not found:
        pytest.fail(
            "megatron-core is not importable: it is a pinned test dependency of tests/mcore "
            "(pip install megatron-core==0.16.1)",
            pytrace=False,
        )
    return version


def cache_key() -> str:
    """sha256 of the generator's sources, megatron-core's and torch's versions (16 hex digits)."""
    h = hashlib.sha256()
    for path in generator_sources():
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    h.update(f"megatron-core=={_megatron_core_version()}\0torch=={torch.__version__}".encode())
    return h.hexdigest()[:16]


def cache_root() -> Path:
    """``$VLA_TEST_CACHE/mcore``, else ``~/.cache/pytest-vla-tests/mcore`` (read when called)."""
    base = os.environ.get("VLA_TEST_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "pytest-vla-tests") / "mcore"


def run_mcore(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``mcore_run.py ARGS``; raise McoreRunError (with its stderr) when it fails."""
    cmd = [sys.executable, str(RUNNER), "--timeout", str(LAUNCH_TIMEOUT_S), *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as e:
        raise McoreRunError(f"{' '.join(cmd)}: no result after {COMMAND_TIMEOUT_S} s") from e
    if done.returncode != 0:
        raise McoreRunError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr[-20000:]}")
    return done


def ensure_set(root: Path | None = None) -> Path:
    """The generated set under ``root`` (default :func:`cache_root`), generating it when absent.

    Written into a temporary sibling and renamed into place; a file lock makes concurrent
    sessions (xdist workers) wait for one generation instead of running their own.

    Example:
        >>> ensure_set(Path("/tmp/mcore-cache"))  # doctest: +SKIP
        PosixPath('/tmp/mcore-cache/3f2a...')
    """
    final = (root or cache_root()) / cache_key()
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(f"{final}.lock", timeout=_LOCK_TIMEOUT_S):
        if final.is_dir():
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        try:
            run_mcore("generate", str(tmp))
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _layout_json(layout: Layout | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A layout as ``forward`` reads it: tp, pp, ep, vpp, dp (dp defaults to ep)."""
    if layout is None:
        return None
    d = dict(layout.__dict__ if isinstance(layout, Layout) else layout)
    d.setdefault("dp", d.get("ep", 1))
    return Layout(**d).__dict__


def mcore_forward(
    ckpt_dir: Path, case_name: str, out_path: Path, layout: Layout | Mapping[str, Any] | None = None
) -> dict[str, torch.Tensor]:
    """megatron-core's logits of a checkpoint: ``{"seq_i": [T, vocab] float32}``.

    Builds ``case_name``'s model at ``layout`` (default: the layout the checkpoint's args
    record), loads ``ckpt_dir`` into it (legacy or torch_dist, detected) and runs its pipeline
    schedule on the case's eval ids. The file at ``out_path`` keeps the logits; its safetensors
    metadata ``missing_keys`` / ``unexpected_keys`` list what a non-strict load skipped.

    Example:
        >>> logits = mcore_forward(converted / "megatron", "llama_tp2", tmp / "l.safetensors")  # doctest: +SKIP
        >>> logits["seq_0"].shape
        torch.Size([16, 100])
    """
    return mcore_forward_batch([(ckpt_dir, case_name, out_path, layout)])[0]


def mcore_forward_batch(
    requests: Sequence[tuple[Path, str, Path, Layout | Mapping[str, Any] | None]],
) -> list[dict[str, torch.Tensor]]:
    """:func:`mcore_forward` for many checkpoints in one command (one launch per world size)."""
    jobs = [{"ckpt": str(c), "case": name, "out": str(o), "layout": _layout_json(lay)} for c, name, o, lay in requests]
    with tempfile.TemporaryDirectory(prefix="mcore-forward-") as tmp:
        spec = Path(tmp) / "jobs.json"
        spec.write_text(json.dumps(jobs))
        run_mcore("forward-batch", str(spec))
    return [load_file(o) for _, _, o, _ in requests]


@pytest.fixture(scope="session")
def mcore_set() -> Path:
    """The megatron-core generated checkpoint set (cached across sessions, see :func:`ensure_set`)."""
    return ensure_set()


@pytest.fixture(name="mcore_forward", scope="session")
def mcore_forward_fixture() -> Callable[..., dict[str, torch.Tensor]]:
    """:func:`mcore_forward`: ``mcore_forward(ckpt_dir, case_name, out_path, layout=None)``."""
    _megatron_core_version()
    return mcore_forward


@pytest.fixture(name="mcore_forward_batch", scope="session")
def mcore_forward_batch_fixture() -> Callable[..., list[dict[str, torch.Tensor]]]:
    """:func:`mcore_forward_batch`: many ``(ckpt_dir, case_name, out_path, layout)`` in one command."""
    _megatron_core_version()
    return mcore_forward_batch


@pytest.fixture(name="mcore_runner", scope="session")
def mcore_runner_fixture() -> Path:
    """The path of ``mcore_run.py`` (to run its command line in a test)."""
    return RUNNER
