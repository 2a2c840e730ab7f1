"""Running a release's demo confined (only behind ``--vla-run-examples``: it runs the release's code).

Each demo runs as ``python -I -B`` in a subprocess of its own session, in a fresh working directory
that is also its HOME, TMPDIR and HF_HOME, with the hub and transformers offline, a time
bound (the whole process group is killed past it) and a memory bound (``RLIMIT_DATA``: the private
memory it may allocate, so a decompression bomb or a runaway allocation ends in ``MemoryError``
rather than in the host's swap; unlike ``RLIMIT_AS`` it leaves torch's address-space reservations
and the mapped weights alone). A bootstrap installs an audit hook (PEP 578)
before the demo's first line: opening a file to read outside the release, the working directory
and the installed environment, opening one to write outside the working directory, and any
socket connection or name lookup raise PermissionError in the demo and are recorded. The hook is
a confinement of mistakes, not a sandbox against malice (docs/security.md): code that wants out
of a Python process can get out, which is why running demos is opt-in.
"""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

__all__ = ["ExampleRun", "run_example"]

# What the hook allows: reads under these roots (plus the release and the working directory);
# writes only under the working directory (plus /dev/null).
_SYSTEM_READ: Final = ("/dev", "/proc", "/sys", "/etc", "/usr", "/lib", "/lib64", "/bin", "/sbin", "/opt")

_BOOT: Final = r"""
import json, os, runpy, sys
_cfg = json.loads(os.environ.pop("VLA_EXAMPLE_CONFINE"))
_log = os.open(_cfg["log"], os.O_WRONLY | os.O_APPEND)
_read = tuple(_cfg["read"]) + tuple(p for p in sys.path if p)
_write = tuple(_cfg["write"])
_busy = []

def _inside(p, roots):
    return any(p == r or p.startswith(r.rstrip(os.sep) + os.sep) for r in roots)

def _deny(kind, what):
    os.write(_log, (json.dumps({"kind": kind, "what": what}) + "\n").encode())
    raise PermissionError(f"pytest-vla --vla-run-examples: {kind} refused: {what}")

def _hook(event, args):
    if _busy:
        return
    if event == "open":
        path, mode, flags = args
        if path is None or isinstance(path, int):
            return
        _busy.append(1)
        try:
            p = os.path.realpath(os.fsdecode(path))
        finally:
            _busy.pop()
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC))
        if writing and not (p == os.devnull or _inside(p, _write)):
            _deny("write outside the working directory", p)
        if not writing and not _inside(p, _read + _write):
            _deny("read outside the release", p)
    elif event in ("socket.connect", "socket.getaddrinfo", "socket.sendto"):
        _deny("network", repr(args[1] if len(args) > 1 else args))

sys.addaudithook(_hook)
sys.argv = _cfg["argv"]
sys.path.insert(0, os.path.dirname(_cfg["argv"][0]))
runpy.run_path(_cfg["argv"][0], run_name="__main__")
"""


@dataclass
class ExampleRun:
    """What one confined run of a demo did."""

    script: Path
    argv: list[str]
    returncode: int | None  # None: killed at the time bound
    stdout: str
    stderr: str
    seconds: float
    refused: list[dict[str, str]] = field(default_factory=list)  # {"kind", "what"} per refused access
    memory_limit: int | None = None  # bytes of private memory it was allowed

    @property
    def timed_out(self) -> bool:
        return self.returncode is None

    @property
    def out_of_memory(self) -> bool:
        """It failed on its memory bound: a MemoryError, or killed by the allocator's abort."""
        if self.memory_limit is None or self.returncode in (0, None):
            return False
        tail = self.stderr[-4000:]
        return "MemoryError" in tail or "std::bad_alloc" in tail or "DefaultCPUAllocator: can't allocate" in tail


def _package_roots() -> list[str]:
    """Where the installed packages the demos use live (an editable install lies outside sys.path)."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    for name in ("vla_reference", "pytest_vla", "vla_conformance"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            roots |= {os.path.realpath(p) for p in spec.submodule_search_locations}
    return sorted(roots)


def _limit_data(limit: int | None) -> Callable[[], None] | None:
    if limit is None:
        return None

    def apply() -> None:  # runs in the child between fork and exec
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

    return apply


def run_example(
    script: Path,
    release: Path,
    args: list[str],
    *,
    timeout: float,
    inputs: Sequence[Path] = (),
    memory: int | None = None,
) -> ExampleRun:
    """Run ``script`` (a demo inside ``release``) with ``args`` as described above; ``inputs``
    are the files given on its command line, which it may read too; ``memory`` is the bound in
    bytes on the private memory it may allocate (None: unbounded)."""
    release = release.resolve()
    with tempfile.TemporaryDirectory(prefix="vla-example-") as tmp:
        work = Path(tmp).resolve()
        log = work / ".refused.jsonl"
        log.touch()
        confine = {
            "log": str(log),
            "read": [str(release), *_SYSTEM_READ, *_package_roots(), *(str(p.resolve()) for p in inputs)],
            "write": [str(work)],
            "argv": [str(script.resolve()), *args],
        }
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(work),
            "TMPDIR": str(work),
            "HF_HOME": str(work / "hf"),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "VLA_EXAMPLE_CONFINE": json.dumps(confine),
        }
        for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ATEN_CPU_CAPABILITY"):
            if k in os.environ:
                env[k] = os.environ[k]
        start = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-I", "-B", "-c", _BOOT],
            cwd=work,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,
            preexec_fn=_limit_data(memory),
        )
        try:
            out, err = proc.communicate(timeout=timeout)
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            code = None
        refused = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        return ExampleRun(script, args, code, out, err, time.monotonic() - start, refused, memory)
