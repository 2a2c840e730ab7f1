"""The reproduction Dockerfile: base images pinned by tag and digest, pip packages pinned with ``==``.

A tag alone can be moved to another image; a digest alone says nothing to a reader. Only
``FROM image:tag@sha256:<digest>`` is both. Every ``pip install`` (``pip``, ``pip3``,
``python -m pip``, ``uv pip``) must name exact versions (``name==1.2.3``), a local path, a wheel, or
a VCS URL at a full commit hash; requirements files given with ``-r`` are checked the same way.
``ARG``/``ENV`` values are substituted where they are defined in the file.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ..errors import MalformedFileError
from ..findings import Finding

__all__ = ["Instruction", "parse_dockerfile", "check_dockerfile", "pinned_requirement", "check_requirements_file"]

_PINNED_IMAGE: Final = re.compile(r"(?P<repo>[^@\s]+?):(?P<tag>\w[\w.-]{0,127})@sha256:(?P<digest>[0-9a-f]{64})")
_REQUIREMENT: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(?:\[[^\]]*\])?\s*===?\s*[^\s;,*<>=!~]+(?:\s*;.*)?")
_VAR: Final = re.compile(r"\$(?:\{([A-Za-z_]\w*)(?::?[-=]([^}]*))?\}|([A-Za-z_]\w*))")
# pip options that take a value (the value is not a requirement)
_PIP_VALUE_OPTIONS: Final = frozenset(
    """-r --requirement -c --constraint -i --index-url --extra-index-url -f --find-links -t --target --prefix --root
    --trusted-host --platform --python-version --implementation --abi --src --upgrade-strategy --progress-bar
    --cache-dir -C --config-settings --global-option --no-binary --only-binary --report --log --timeout --retries
    --proxy --python --build-constraint -e --editable""".split()
)
_SPLIT: Final = re.compile(r"&&|\|\||;|\||\n")


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction, continuation lines joined."""

    keyword: str
    args: str
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """The instructions of a Dockerfile (comments dropped, ``\\`` continuations joined).

    Example:
        >>> [(i.keyword, i.line) for i in parse_dockerfile("FROM a:1\\nRUN pip install \\\\\\n  x==1\\n")]
        [('FROM', 1), ('RUN', 2)]
    """
    escape = "\\"
    m = re.match(r"\s*#\s*escape\s*=\s*(\S)", text)
    if m:
        escape = m.group(1)
    out: list[Instruction] = []
    buf: list[str] = []
    start = 0
    for n, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment lines inside a continuation are dropped by Docker
        if not buf:
            start = n
        if stripped.endswith(escape):
            buf.append(stripped[:-1].strip())
            continue
        buf.append(stripped)
        joined = " ".join(buf).strip()
        buf = []
        keyword, _, args = joined.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
    if buf:
        joined = " ".join(buf).strip()
        keyword, _, args = joined.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
    return out


def _substitute(text: str, env: dict[str, str]) -> tuple[str, list[str]]:
    """``text`` with ``$X``/``${X}``/``${X:-d}`` replaced from ``env``; the names it could not resolve."""
    unresolved: list[str] = []

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        if name in env:
            return env[name]
        if m.group(2) is not None:
            return m.group(2)
        unresolved.append(name)
        return m.group(0)

    return _VAR.sub(repl, text), unresolved


def _assignments(args: str) -> dict[str, str]:
    """``ARG``/``ENV`` definitions: ``A=1 B="2"``, ``A 1`` (legacy ENV) or a bare ``ARG A``."""
    try:
        tokens = shlex.split(args)
    except ValueError:
        tokens = args.split()
    if len(tokens) >= 2 and "=" not in tokens[0]:
        return {tokens[0]: " ".join(tokens[1:])}
    pairs = (t.partition("=") for t in tokens)
    return {k: v for k, sep, v in pairs if sep}


def pinned_requirement(spec: str) -> bool:
    """Whether a pip requirement names one exact artefact."""
    s = spec.strip()
    if s.startswith((".", "/", "~")) or s.endswith((".whl", ".tar.gz", ".zip")):
        return True  # a local project or an archive whose file name carries its version
    url = s.split(" @ ", 1)[1].strip() if " @ " in s else s
    if "://" in url or url.startswith("git+"):
        return bool(re.search(r"@[0-9a-f]{40}\b", url)) or "#sha256=" in url or url.endswith((".whl", ".tar.gz"))
    return _REQUIREMENT.fullmatch(s) is not None


def _pip_arguments(tokens: list[str]) -> list[str] | None:
    """The arguments after ``install`` if ``tokens`` is a pip install command, else None."""
    for i, tok in enumerate(tokens):
        name = tok.rsplit("/", 1)[-1]
        if re.fullmatch(r"pip[\d.]*", name) and tokens[i + 1 : i + 2] == ["install"]:
            return tokens[i + 2 :]
        if re.fullmatch(r"python[\d.]*", name) and tokens[i + 1 : i + 4] == ["-m", "pip", "install"]:
            return tokens[i + 4 :]
        if name == "uv" and tokens[i + 1 : i + 3] == ["pip", "install"]:
            return tokens[i + 3 :]
    return None


def check_requirements_file(path: Path, *, seen: set[Path] | None = None) -> list[Finding]:
    """Every requirement in a requirements file is pinned (``-r`` includes followed)."""
    seen = seen if seen is not None else set()
    if path.resolve() in seen:
        return []
    seen.add(path.resolve())
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise MalformedFileError(f"cannot read requirements: {e}", path=path) from e
    out: list[Finding] = []
    for n, raw in enumerate(lines, start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("-r ", "--requirement ")):
            out += check_requirements_file(path.parent / line.split(None, 1)[1].strip(), seen=seen)
            continue
        if line.startswith("-"):
            continue  # options: index URLs, constraints, hashes
        if not pinned_requirement(line):
            out.append(_unpinned(path, n, line))
    return out


def _unpinned(path: Path, line: int, spec: str) -> Finding:
    name = re.split(r"[\[<>=!~;@ ]", spec, maxsplit=1)[0]
    return Finding(
        "pip package not pinned",
        repr(spec),
        f"{name}==<version>",
        path,
        name,
        f"pin it: {name}==<the version you tested> (pip freeze shows it)",
        line,
    )


def check_dockerfile(path: Path, *, search: Sequence[Path] = ()) -> list[Finding]:
    """Base images pinned by tag and digest; pip installs pinned with ``==``.

    Args:
        path: The Dockerfile.
        search: Directories to look for ``-r`` requirements files in (the Dockerfile's own first).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise MalformedFileError(f"cannot read the Dockerfile: {e}", path=path) from e
    instructions = parse_dockerfile(text)
    out: list[Finding] = []
    env: dict[str, str] = {}
    stages: set[str] = set()
    if not any(i.keyword == "FROM" for i in instructions):
        out.append(Finding("no base image", "no FROM instruction", "FROM image:tag@sha256:<digest>", path, "FROM"))
    for ins in instructions:
        if ins.keyword in ("ARG", "ENV"):
            for k, v in _assignments(ins.args).items():
                if ins.keyword == "ENV" or k not in env:  # an ARG default does not override a value
                    env[k] = _substitute(v, env)[0]
        elif ins.keyword == "FROM":
            out += _check_from(path, ins, env, stages)
        elif ins.keyword == "RUN":
            out += _check_run(path, ins, env, [path.parent, *search])
    return out


def _check_from(path: Path, ins: Instruction, env: dict[str, str], stages: set[str]) -> list[Finding]:
    tokens = [t for t in ins.args.split() if not t.startswith("--")]
    if not tokens:
        return [
            Finding("FROM names no image", repr(ins.args), "image:tag@sha256:<digest>", path, "FROM", None, ins.line)
        ]
    image, unresolved = _substitute(tokens[0], env)
    if len(tokens) >= 3 and tokens[1].lower() == "as":
        stages.add(tokens[2].lower())
    if image == "scratch" or image.lower() in stages:
        return []
    if unresolved or not _PINNED_IMAGE.fullmatch(image):
        has_digest = "@sha256:" in image
        missing = "a tag" if has_digest else "a digest" if ":" in image.rsplit("/", 1)[-1] else "a tag and a digest"
        return [
            Finding(
                "base image not pinned by tag and digest",
                f"FROM {tokens[0]}"
                + (f" (unresolved ${', $'.join(unresolved)})" if unresolved else f" lacks {missing}"),
                "FROM image:tag@sha256:<64 hex digits>",
                path,
                "FROM",
                "pin it: FROM image:tag@sha256:<digest> "
                "(`docker buildx imagetools inspect image:tag` prints the digest)",
                ins.line,
            )
        ]
    return []


def _check_run(path: Path, ins: Instruction, env: dict[str, str], search: list[Path]) -> list[Finding]:
    command = ins.args
    if command.startswith("["):
        try:
            command = " ".join(json.loads(command))
        except (ValueError, TypeError):
            pass
    out: list[Finding] = []
    for part in _SPLIT.split(command):
        try:
            tokens = shlex.split(part)
        except ValueError:
            tokens = part.split()
        args = _pip_arguments(tokens)
        if args is None:
            continue
        i = 0
        while i < len(args):
            arg = args[i]
            if arg in ("-r", "--requirement") and i + 1 < len(args):
                out += _requirements(path, ins, args[i + 1], search)
                i += 2
                continue
            if arg.startswith("--requirement="):
                out += _requirements(path, ins, arg.split("=", 1)[1], search)
            elif arg in _PIP_VALUE_OPTIONS:
                i += 2
                continue
            elif not arg.startswith("-"):
                spec, unresolved = _substitute(arg, env)
                if unresolved or not pinned_requirement(spec):
                    out.append(_unpinned(path, ins.line, arg))
            i += 1
    return out


def _requirements(path: Path, ins: Instruction, name: str, search: list[Path]) -> list[Finding]:
    for d in search:
        candidate = d / name
        if candidate.is_file():
            return check_requirements_file(candidate)
    return [
        Finding(
            "requirements file not in the release",
            f"pip install -r {name}",
            f"{name} beside the Dockerfile",
            path,
            name,
            "ship the requirements file (with every package pinned) beside the Dockerfile",
            ins.line,
        )
    ]
