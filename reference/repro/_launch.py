"""The launch script: it runs (bash -n) and its flags agree with the matrix and the training args."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from .._fs import MANIFEST, inside
from ..converter._model import Arch, Layout
from ..errors import LayoutError
from ..findings import Finding
from ._matrix import MATRIX, same_value

DEFAULT_LAUNCH_SCRIPT: Final = "scripts/run_pretrain.sh"


def launch_script(root: Path, manifest: Mapping[str, Any]) -> Path:
    """The launch script: release.json's ``launch_script``, else scripts/run_pretrain.sh.

    Raises:
        LayoutError: release.json names a script outside the release (absolute, ``../``, or a
            symlink that leaves it): it is not the release's, and is never read.
    """
    named = manifest.get("launch_script")
    if named is None or named == "":
        return root / DEFAULT_LAUNCH_SCRIPT
    path = inside(root, named)
    if path is None:
        raise LayoutError(
            f"release.json names a launch script outside the release: {named!r}",
            path=root / MANIFEST,
            key="launch_script",
            fix="ship the script in the release (scripts/) and name it by its path relative to the release",
        )
    return path


def check_script_runs(path: Path, *, timeout: float = 30.0) -> list[Finding]:
    """The launch script is there, executable, and ``bash -n`` finds no syntax error.

    Raises FileNotFoundError when no ``bash`` is installed (the caller decides to skip).
    """
    if not path.is_file():
        return [
            Finding(
                "launch script missing",
                "not in the release",
                "a bash script that launches pre-training",
                path,
                None,
                f'add {path.name} (or name the script in release.json as "launch_script")',
            )
        ]
    out = []
    if not os.stat(path).st_mode & 0o111:
        out.append(
            Finding(
                "launch script not executable",
                oct(os.stat(path).st_mode & 0o777),
                "mode with the executable bits (0755)",
                path,
                None,
                f"chmod +x {path.name}",
            )
        )
    bash = shutil.which("bash")
    if bash is None:
        raise FileNotFoundError("bash")
    proc = subprocess.run([bash, "-n", str(path)], capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        message = proc.stderr.strip().splitlines()[0] if proc.stderr.strip() else f"exit status {proc.returncode}"
        m = re.search(r"line (\d+)", message)
        out.append(
            Finding(
                "launch script has a syntax error",
                message.replace(str(path) + ": ", ""),
                "bash -n to pass",
                path,
                None,
                "fix the script so that `bash -n` passes",
                int(m.group(1)) if m else None,
            )
        )
    return out


_ASSIGN: Final = re.compile(r"^\s*(?:export\s+|readonly\s+|declare\s+(?:-\w+\s+)*)?([A-Za-z_]\w*)=(\S*)")

_DEFAULT: Final = re.compile(r"\$\{([A-Za-z_]\w*):?=([^}]*)\}")

_REF: Final = re.compile(r"\$(?:\{([A-Za-z_]\w*)(?::?-([^}]*))?\}|([A-Za-z_]\w*))")


def _unquote(text: str) -> str:
    try:
        parts = shlex.split(text)
    except ValueError:
        return text.strip("'\"")
    return parts[0] if parts else ""


def script_flags(text: str, names: Iterable[str]) -> dict[str, list[tuple[str | None, int]]]:
    """Where a shell script sets each of ``names`` (``--name V`` or ``--name=V``): (value, line) pairs.

    Simple variables (``TP=8``, ``export TP=8``, ``${TP:-8}``, ``: "${TP:=8}"``) are resolved; a
    value that depends on the environment or a command is None.
    """
    wanted = set(names)
    env: dict[str, str] = {}
    out: dict[str, list[tuple[str | None, int]]] = {}
    lines = text.splitlines()
    n = 0
    while n < len(lines):
        start, line = n + 1, lines[n]
        while line.rstrip().endswith("\\") and n + 1 < len(lines):
            n += 1
            line = line.rstrip()[:-1] + " " + lines[n]
        n += 1
        code = line if not line.lstrip().startswith("#") else ""
        code = re.sub(r"(^|\s)#.*$", r"\1", code)
        for d in _DEFAULT.finditer(code):
            env.setdefault(d.group(1), d.group(2))
        assign = _ASSIGN.match(code)
        if assign:
            value = _resolve(_unquote(assign.group(2)), env)
            if value is not None:
                env[assign.group(1)] = value
        try:
            tokens = shlex.split(code)
        except ValueError:
            tokens = code.split()
        for i, tok in enumerate(tokens):
            if not tok.startswith("--"):
                continue
            name, eq, inline = tok[2:].partition("=")
            if name not in wanted:
                continue
            raw = inline if eq else (tokens[i + 1] if i + 1 < len(tokens) else "")
            out.setdefault(name, []).append((_resolve(raw, env), start))
    return out


def _resolve(value: str, env: Mapping[str, str]) -> str | None:
    unresolved = False

    def repl(m: re.Match[str]) -> str:
        nonlocal unresolved
        name = m.group(1) or m.group(3)
        if name in env:
            return env[name]
        if m.group(2) is not None:
            return m.group(2)
        unresolved = True
        return ""

    resolved = _REF.sub(repl, value)
    if unresolved or "$(" in value or "`" in value:
        return None
    return resolved


def expected_flags(arch: Arch, layout: Layout) -> dict[str, Any]:
    """The launch flags the matrix derives from the architecture and layout (flag name -> value)."""
    out: dict[str, Any] = {}
    for key in MATRIX:
        if key.layout is not None:
            out[key.name] = getattr(layout, key.layout)
        elif key.arch is not None and key.name != "moe-layer-freq":
            if key.name.startswith("moe-") and not arch.num_experts:
                continue
            out[key.name] = getattr(arch, key.arch)
            out.update({alias: out[key.name] for alias in key.aliases})
    return out


def check_script_args(path: Path, expected: Mapping[str, Any], *, source: str) -> list[Finding]:
    """The script launches with the expected values of these flags (parallel sizes required, others if set).

    Args:
        path: The launch script.
        expected: Flag name (without dashes) -> value; the parallel sizes must be set (Megatron's
            default is 1), the other flags are compared where the script sets them.
        source: Where the expected values come from, for messages.
    """
    text = path.read_text(encoding="utf-8", errors="replace")
    found = script_flags(text, expected)
    out = []
    for name, want in expected.items():
        seen = found.get(name)
        required = name.endswith("-parallel-size")
        if not seen:
            if required and not same_value(want, 1):
                out.append(
                    Finding(
                        f"launch script does not set --{name}",
                        "not set (Megatron's default is 1)",
                        f"{want} from {source}",
                        path,
                        f"--{name}",
                        f"add --{name} {want} to the launch command",
                    )
                )
            continue
        for value, line in seen:
            if value is None:
                out.append(
                    Finding(
                        f"--{name} comes from the environment",
                        "a value the script does not define",
                        f"{want} from {source}",
                        path,
                        f"--{name}",
                        f"write --{name} {want} (or define it in the script): a launch must not depend on it",
                        line,
                    )
                )
            elif not same_value(value, want):
                out.append(
                    Finding(
                        f"--{name} differs",
                        value,
                        f"{want} from {source}",
                        path,
                        f"--{name}",
                        f"launch with --{name} {want}",
                        line,
                    )
                )
    return out
