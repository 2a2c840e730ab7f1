"""Mutations of a release, as a fuzzer or an attacker makes them, and the oracle every verdict must meet.

Used by the bounded fuzz test (``tests/plugin/test_fuzz.py``) and the long campaign
(``benchmarks/fuzz.py``). A :class:`Mutation` is plain data (what to do, to which file, with
which numbers) so that hypothesis can draw, shrink and print it, and a campaign can log it; the
numbers that pick a byte or a JSON field are reduced modulo what the file holds when it is applied.

The oracle (:func:`judge`) is what docs/security.md promises on any input: a verdict within the
time and memory bounds, no internal error (no traceback, no failure that is a bare Python exception), every
failure naming a file inside the release, and the release's bytes unchanged.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KINDS = (
    "flip",  # xor one byte
    "truncate",  # keep a fraction of the file
    "empty",  # zero bytes
    "json-delete",  # remove one field (any depth)
    "json-retype",  # replace one field's value by a value of another type
    "json-duplicate",  # a key written twice, the second with a hostile value
    "remove",
    "rename",
    "symlink-out",  # the file replaced by a link leaving the release
    "dev-zero",  # the file replaced by a link to /dev/zero
    "fifo",
    "directory",  # the file replaced by a directory
    "hostile-path",  # a path-valued field (config, launch_script, codebook, weight_map) made absolute or ../
)
# values a field may be retyped to: other types, extremes, and numbers no converter expects
RETYPES: tuple[Any, ...] = (
    None,
    [],
    {},
    "",
    "x" * 300,
    -1,
    0,
    2**63,
    1.5,
    True,
    [1, 2, 3],
    {"a": {"b": None}},
    "../../../etc/passwd",
)
HOSTILE_PATHS = ("/etc/hostname", "../../outside.json", "/dev/zero", "model/../../outside.json")
# fields that name a file, by the file that holds them
PATH_FIELDS = {
    "release.json": ("config", "launch_script"),
    "model/processor_config.json": ("image_processor.codebook_file", "audio_processor.codebook_file"),
    "model/preprocessor_config.json": ("codebook_file",),
}
TIME_BOUND_S = 150
# private memory (RLIMIT_DATA) each process of a suite run may allocate, and the peak RSS a run
# may reach: the golden releases need ~0.4 GB; 2 GiB is the per-process target at any size (#21)
MEMORY_BOUND_MIB = 2048
# exceptions that mean a check met input it did not expect (a defect of ours, not a finding)
_PYTHON_ERRORS = frozenset(
    name for name, obj in vars(builtins).items() if isinstance(obj, type) and issubclass(obj, BaseException)
) | {"PanicException", "SafetensorError", "UnpicklingError", "JSONDecodeError", "RuntimeError", "HeaderTooLarge"}


@dataclass(frozen=True)
class Mutation:
    """One change to one file of a release; ``refresh``: release.json rewritten to match, as an
    attacker shipping a consistent manifest would."""

    kind: str
    file: str
    pick: int = 0  # which byte, field or path (modulo what there is)
    value: int = 0  # which xor mask, fraction or retype value
    refresh: bool = False

    def __str__(self) -> str:
        return f"{self.kind} {self.file} pick={self.pick} value={self.value}{' +manifest' if self.refresh else ''}"


def release_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def _json_paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    out = []
    if isinstance(data, dict):
        for k, v in data.items():
            out.append((*prefix, k))
            out.extend(_json_paths(v, (*prefix, k)))
    elif isinstance(data, list):
        for i, v in enumerate(data[:8]):
            out.append((*prefix, i))
            out.extend(_json_paths(v, (*prefix, i)))
    return out


def _set(data: Any, path: tuple, value: Any, delete: bool = False) -> None:
    for part in path[:-1]:
        data = data[part]
    if delete:
        del data[path[-1]]
    else:
        data[path[-1]] = value


def _json_fields(path: Path) -> tuple[Any, list[tuple]] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    return data, _json_paths(data)


def apply(m: Mutation, root: Path, outside: Path) -> bool:
    """Apply ``m`` to the release at ``root`` (``outside``: a directory beside it an escaping link
    may name). Returns False when the mutation does not apply to that file (it is left alone)."""
    path = root / m.file
    if not path.is_file():
        return False
    if m.kind in ("flip", "truncate", "empty"):
        data = bytearray(path.read_bytes())
        if not data:
            return False
        if m.kind == "flip":
            data[m.pick % len(data)] ^= 1 << (m.value % 8) or 1
        elif m.kind == "truncate":
            del data[max(0, (len(data) * (m.value % 100)) // 100) :]
        else:
            data.clear()
        path.write_bytes(bytes(data))
    elif m.kind.startswith("json-"):
        found = _json_fields(path)
        if found is None or not found[1]:
            return False
        data, fields = found
        field_path = fields[m.pick % len(fields)]
        if m.kind == "json-delete":
            _set(data, field_path, None, delete=True)
            path.write_text(json.dumps(data, indent=2))
        elif m.kind == "json-retype":
            _set(data, field_path, RETYPES[m.value % len(RETYPES)])
            path.write_text(json.dumps(data, indent=2))
        else:
            if not isinstance(data, dict):
                return False
            key = list(data)[m.pick % len(data)]
            text = json.dumps(data, indent=2)
            hostile = json.dumps(RETYPES[m.value % len(RETYPES)])
            path.write_text(text[: text.rindex("}")].rstrip() + f",\n  {json.dumps(key)}: {hostile}\n}}\n")
    elif m.kind == "remove":
        path.unlink()
    elif m.kind == "rename":
        path.rename(path.with_name(path.name + ".orig"))
    elif m.kind in ("symlink-out", "dev-zero", "fifo", "directory"):
        if m.kind == "symlink-out":
            target = outside / path.name
            shutil.copyfile(path, target)
        path.unlink()
        if m.kind == "symlink-out":
            path.symlink_to(target)
        elif m.kind == "dev-zero":
            path.symlink_to("/dev/zero")
        elif m.kind == "fifo":
            os.mkfifo(path)
        else:
            path.mkdir()
    elif m.kind == "hostile-path":
        names = PATH_FIELDS.get(m.file)
        found = _json_fields(path)
        if not names or found is None:
            return False
        data = found[0]
        target = tuple(names[m.pick % len(names)].split("."))
        try:
            _set(data, target, HOSTILE_PATHS[m.value % len(HOSTILE_PATHS)])
        except (KeyError, TypeError):
            return False
        path.write_text(json.dumps(data, indent=2))
    else:
        raise ValueError(f"unknown mutation kind {m.kind!r}")
    if m.refresh:
        from vla_reference.errors import ReleaseError
        from vla_reference.release import write_manifest

        try:
            write_manifest(root)
        except ReleaseError:
            pass  # a special file or a link out: the manifest stays as shipped
    return True


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry's type, size, mtime and (for links) target: what 'the release unchanged' compares."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (
            st.st_mode,
            st.st_size,
            st.st_mtime_ns,
            os.readlink(p) if p.is_symlink() else None,
        )
    return out


@dataclass
class Verdict:
    """What one suite run on one mutated release gave, and the oracle's complaints (empty: it held)."""

    mutation: Mutation | str
    seconds: float
    exit_status: int | None
    verdict_line: str | None
    failed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    peak_mib: float | None = None  # RSS of the run's largest process


def run_suite(
    release: Path, cache: Path, report: Path, *args: str, timeout: float = TIME_BOUND_S
) -> tuple[int | None, str, float, float]:
    """The installed suite on ``release`` in a subprocess (``-s``, ``y`` on stdin: nothing may read
    it), each of its processes bounded to MEMORY_BOUND_MIB of private memory. Returns the exit
    status (None: killed at ``timeout``), stdout and stderr, the seconds, and the peak RSS in MiB
    of the largest process of the run (its ranks included: wait4's rusage covers the reaped tree)."""

    def bound() -> None:  # in the child, before exec
        limit = MEMORY_BOUND_MIB * 2**20
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

    cmd = [
        sys.executable,
        "-m",
        "pytest",
        f"--vla-release={release}",
        f"--vla-cache-dir={cache}",
        f"--vla-report={report}",
        "--vla-allow-partial",
        "-s",
        "-p",
        "no:cacheprovider",
        *args,
    ]
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=report.parent,
        env={**os.environ, "CI": "1"},
        start_new_session=True,
        preexec_fn=bound,
    )
    chunks: list[bytes] = []
    assert proc.stdin is not None and proc.stdout is not None
    stdout = proc.stdout
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: stdout.read(65536), b"")), daemon=True)
    reader.start()
    with contextlib.suppress(BrokenPipeError):  # it exited before reading stdin, as it should
        proc.stdin.write(b"y\n" * 4)
        proc.stdin.close()
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(timeout, kill)
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)  # wait4, not Popen.wait: it returns the rusage
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(timeout=10)
    output = b"".join(chunks).decode(errors="replace")
    seconds = time.monotonic() - start
    return (None if killed.is_set() else proc.returncode), output, seconds, usage.ru_maxrss / 1024


def _names_a_file_inside(finding: dict[str, Any]) -> bool:
    file = finding.get("file")
    if not file:
        return False
    return not (file.startswith("/") or file == ".." or file.startswith("../") or "/../" in file)


def judge(
    m: Mutation | str,
    release: Path,
    before: dict[str, tuple],
    exit_status: int | None,
    output: str,
    seconds: float,
    report: Path,
    peak_mib: float | None = None,
) -> Verdict:
    """The oracle: a verdict in time and memory, no internal error, every failure naming a file
    inside the release, the release unchanged."""
    v = Verdict(m, seconds, exit_status, None, peak_mib=peak_mib)
    if exit_status is None:
        v.problems.append(f"no verdict within {TIME_BOUND_S} s (hang)")
        return v
    if "MemoryError" in output or (peak_mib is not None and peak_mib > MEMORY_BOUND_MIB):
        v.problems.append(f"over the memory bound of {MEMORY_BOUND_MIB} MiB (peak RSS {peak_mib or 0:.0f} MiB)")
    if snapshot(release) != before:
        v.problems.append("the release was written")
    if "Traceback (most recent call last)" in output or "INTERNALERROR" in output:
        v.problems.append("internal error: " + output[output.find("Traceback") :][:1500])
    if exit_status not in (0, 1):
        v.problems.append(f"exit status {exit_status} (expected 0 or 1)")
    try:
        data = json.loads(report.read_text())
    except (OSError, ValueError) as e:
        v.problems.append(f"no JSON report: {e}")
        return v
    v.verdict_line = data.get("verdict_line")
    if not v.verdict_line or data.get("verdict") not in ("CONFORMS", "DOES NOT CONFORM"):
        v.problems.append(f"no verdict: {data.get('verdict')!r}")
    for check in data.get("checks", []):
        if check["status"] != "failed":
            continue
        name = check["nodeid"].split("::", 1)[-1]
        v.failed.append(name)
        findings = check.get("findings") or []
        raw = [f for f in findings if f.get("what") in _PYTHON_ERRORS]
        if raw:
            v.problems.append(f"{name}: a bare {raw[0]['what']}: {raw[0].get('observed')}"[:600])
        elif not any(_names_a_file_inside(f) for f in findings):
            first = findings[0] if findings else {}
            v.problems.append(f"{name}: no finding names a file inside the release: {first}"[:600])
    return v
