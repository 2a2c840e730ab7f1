"""Fixtures for megatron-core produced checkpoints, loaded by ``pytest_plugins = ["mcore_fixtures"]``.

``mcore_set`` is the directory ``mcore_run.py generate`` writes (one sub-directory per case of
``mcore_cases.CASES``), generated once per machine and cached on disk under a key that changes with
the generator's sources, megatron-core's version and torch's version. ``mcore_forward`` loads a
checkpoint into megatron-core and returns its logits: the producer's judgement of a checkpoint
written by someone else (our converter); ``mcore_forward_args`` does so for the model the
checkpoint's own args describe. megatron-core is a pinned test dependency: when it is missing
these fixtures fail, they never skip.

Another release (``mcore_release.RELEASES``) is installed beside the venv's with
``pip install --no-deps --target <sys.prefix>/mcore-<version> megatron-core==<version>`` and runs
in the generator's subprocesses with that directory first on ``PYTHONPATH``
(:func:`ensure_set`, :func:`mcore_forward_batch` with ``release=``). It is pinned too: absent, the
tests that need it fail naming the install command.
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
from mcore_release import DEFAULT_VERSION, RELEASES

HERE: Final = Path(__file__).resolve().parent
RUNNER: Final = HERE / "mcore_run.py"
#: Seconds one ``mcore_run.py`` command may take (each launch inside it is bounded separately).
COMMAND_TIMEOUT_S: Final = 900
LAUNCH_TIMEOUT_S: Final = 300
_LOCK_TIMEOUT_S: Final = 1200


class McoreRunError(RuntimeError):
    """``mcore_run.py`` failed; the message carries its command line and stderr."""


def generator_sources() -> list[Path]:
    """The files whose contents decide what ``generate`` writes (``mcore_*.py`` but the fixtures,
    and the recorded Megatron-LM arguments ``mcore_*.json``)."""
    files = [*HERE.glob("mcore_*.py"), *HERE.glob("mcore_*.json")]
    return sorted(p for p in files if p.name != Path(__file__).name)


def release_path(version: str) -> Path:
    """Where megatron-core ``version`` is installed beside the venv's: ``<sys.prefix>/mcore-<version>``."""
    return Path(sys.prefix) / f"mcore-{version}"


def install_command(version: str) -> str:
    """The command that installs megatron-core ``version`` where :func:`release_path` looks."""
    target = release_path(version)
    try:
        target = target.relative_to(Path.cwd())
    except ValueError:
        pass
    return f"{sys.executable} -m pip install -q --no-deps --target {target} megatron-core=={version}"


def require_release(version: str) -> Path:
    """The ``PYTHONPATH`` entry of megatron-core ``version``; fails the test when it is not installed."""
    if version not in RELEASES:
        raise KeyError(f"megatron-core {version}: no record in mcore_release.RELEASES ({', '.join(RELEASES)})")
    path = release_path(version)
    found = [d.version for d in importlib.metadata.distributions(path=[str(path)]) if d.name == "megatron-core"]
    if found != [version] or not (path / "megatron" / "core" / "__init__.py").is_file():
        pytest.fail(
            f"megatron-core {version} is not installed at {path} (found {found or 'nothing'}): it is a pinned "
            f"test dependency of tests/mcore. Install it with: {install_command(version)}",
            pytrace=False,
        )
    return path


def _release_env(release: str | None) -> dict[str, str] | None:
    """The environment a subprocess runs ``release`` in (None: this one, the venv's release)."""
    if release is None or (release == DEFAULT_VERSION and _megatron_core_version() == release):
        return None
    paths = [str(require_release(release)), *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
    return os.environ | {"PYTHONPATH": os.pathsep.join(paths)}


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


def cache_key(release: str | None = None, cases: Sequence[str] | None = None) -> str:
    """sha256 of the generator's sources, megatron-core's (``release``, default the venv's) and
    torch's versions, and the cases asked for (default all) (16 hex digits)."""
    h = hashlib.sha256()
    for path in generator_sources():
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    version = _megatron_core_version() if release is None else release
    h.update(f"megatron-core=={version}\0torch=={torch.__version__}".encode())
    if cases is not None:
        h.update(("\0cases=" + ",".join(cases)).encode())
    return h.hexdigest()[:16]


def cache_root() -> Path:
    """``$VLA_TEST_CACHE/mcore``, else ``~/.cache/pytest-vla-tests/mcore`` (read when called)."""
    base = os.environ.get("VLA_TEST_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "pytest-vla-tests") / "mcore"


def run_mcore(*args: str, release: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``mcore_run.py ARGS`` (under megatron-core ``release``, default the venv's); raise
    McoreRunError (with its stderr) when it fails."""
    cmd = [sys.executable, str(RUNNER), "--timeout", str(LAUNCH_TIMEOUT_S), *args]
    env = _release_env(release)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False, env=env)
    except subprocess.TimeoutExpired as e:
        raise McoreRunError(f"{' '.join(cmd)}: no result after {COMMAND_TIMEOUT_S} s") from e
    if done.returncode != 0:
        under = f" (megatron-core {release})" if env is not None else ""
        raise McoreRunError(f"{' '.join(cmd)}{under} exited {done.returncode}:\n{done.stderr[-20000:]}")
    return done


def ensure_set(root: Path | None = None, *, release: str | None = None, cases: Sequence[str] | None = None) -> Path:
    """The generated set under ``root`` (default :func:`cache_root`), generating it when absent.

    ``release``: the megatron-core release that writes it (default the venv's); ``cases``: the
    cases to generate (default all that release can train). Written into a temporary sibling and
    renamed into place; a file lock makes concurrent sessions (xdist workers) wait for one
    generation instead of running their own.

    Example:
        >>> ensure_set(Path("/tmp/mcore-cache"))  # doctest: +SKIP
        PosixPath('/tmp/mcore-cache/3f2a...')
        >>> ensure_set(release="0.13.1", cases=["llama_tp2"])  # doctest: +SKIP
    """
    if release is not None:
        require_release(release)
    final = (root or cache_root()) / cache_key(release, cases)
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(f"{final}.lock", timeout=_LOCK_TIMEOUT_S):
        if final.is_dir():
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        try:
            run_mcore("generate", str(tmp), *(a for c in cases or () for a in ("--case", c)), release=release)
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
    requests: Sequence[tuple[Path, str, Path, Layout | Mapping[str, Any] | None]], *, release: str | None = None
) -> list[dict[str, torch.Tensor]]:
    """:func:`mcore_forward` for many checkpoints in one command (one launch per world size)."""
    jobs = [{"ckpt": str(c), "case": name, "out": str(o), "layout": _layout_json(lay)} for c, name, o, lay in requests]
    return _forward_jobs(jobs, release)


def mcore_forward_args(
    requests: Sequence[tuple[Path, Path, Path, Layout | Mapping[str, Any] | None]], *, release: str | None = None
) -> list[dict[str, torch.Tensor]]:
    """megatron-core's logits of checkpoints whose own recorded args describe the model
    (``--use-checkpoint-args``), for ``(ckpt_dir, eval_set_json, out_path, layout)`` each.

    The eval set is ``{"sequences": [{"name", "input_ids"}, ...]}`` (any lengths); the result has
    one ``[T, true vocab]`` float32 tensor per sequence name (bf16 weights evaluated in float32).
    The file at ``out_path`` keeps them; its metadata says what a non-strict load skipped
    (``missing_keys``, ``unexpected_keys``), where the args were read (``args``) and the weights'
    dtype. One command, one launch per world size.

    Example:
        >>> [logits] = mcore_forward_args([(Path("golden/dense/checkpoint"),
        ...     Path("golden/dense/golden/eval_set.json"), tmp / "l.safetensors", None)])  # doctest: +SKIP
    """
    jobs = [
        {"ckpt": str(c), "eval_set": str(e), "out": str(o), "layout": _layout_json(lay)} for c, e, o, lay in requests
    ]
    return _forward_jobs(jobs, release)


def _forward_jobs(jobs: list[dict[str, Any]], release: str | None) -> list[dict[str, torch.Tensor]]:
    """Run ``forward-batch`` on ``jobs``; the logits files they name, loaded."""
    with tempfile.TemporaryDirectory(prefix="mcore-forward-") as tmp:
        spec = Path(tmp) / "jobs.json"
        spec.write_text(json.dumps(jobs))
        run_mcore("forward-batch", str(spec), release=release)
    return [load_file(j["out"]) for j in jobs]


@pytest.fixture(name="mcore_ensure_set", scope="session")
def mcore_ensure_set_fixture() -> Callable[..., Path]:
    """:func:`ensure_set`, for a test that needs another release's set (``release=``)."""
    return ensure_set


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


@pytest.fixture(name="mcore_forward_args", scope="session")
def mcore_forward_args_fixture() -> Callable[..., list[dict[str, torch.Tensor]]]:
    """:func:`mcore_forward_args`: ``mcore_forward_args([(ckpt_dir, eval_set, out_path, layout)], release=None)``."""
    _megatron_core_version()
    return mcore_forward_args


@pytest.fixture(name="mcore_runner", scope="session")
def mcore_runner_fixture() -> Path:
    """The path of ``mcore_run.py`` (to run its command line in a test)."""
    return RUNNER
