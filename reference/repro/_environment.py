"""The environment record (docker/environment.json): the versions a run needs, each pinned."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import yaml

from .._fs import read_text
from .._yaml import safe_load
from ..card._rules import PLACEHOLDERS
from ..errors import MalformedFileError
from ..findings import Finding
from ._matrix import flatten_config

ENVIRONMENT_FILES: Final = ("environment.json", "environment.yaml", "environment.yml")


@dataclass(frozen=True)
class EnvKey:
    """A version the environment record must state: its spellings, and how to read it in the container."""

    name: str
    spellings: tuple[str, ...]
    how: str


ENVIRONMENT_KEYS: Final[tuple[EnvKey, ...]] = (
    EnvKey("python", ("python", "python-version"), "python --version"),
    EnvKey(
        "torch",
        ("torch", "pytorch", "torch-version", "pytorch-version"),
        "python -c 'import torch; print(torch.__version__)'",
    ),
    EnvKey("cuda", ("cuda", "cuda-version"), "python -c 'import torch; print(torch.version.cuda)'"),
    EnvKey("nccl", ("nccl", "nccl-version"), "python -c 'import torch; print(torch.cuda.nccl.version())'"),
)


def environment_record(docker_dir: Path) -> Path | None:
    """The environment record in ``docker/`` (environment.json, .yaml or .yml), if any."""
    return next((docker_dir / n for n in ENVIRONMENT_FILES if (docker_dir / n).is_file()), None)


def check_environment(path: Path) -> list[Finding]:
    """The record states a version for Python, torch, CUDA and NCCL."""
    try:
        text = read_text(path, max_bytes=1 << 20, what="environment record")
        data = json.loads(text) if path.suffix == ".json" else safe_load(text)
    except MalformedFileError as e:
        return [Finding("environment record unreadable", e.detail, "a JSON/YAML mapping", path, None, e.fix)]
    except (ValueError, RecursionError, yaml.YAMLError) as e:
        return [Finding("environment record unreadable", str(e), "a JSON/YAML mapping", path, None, "fix its syntax")]
    if not isinstance(data, Mapping):
        return [Finding("environment record is not a mapping", type(data).__name__, "{python: ..., torch: ...}", path)]
    flat = flatten_config(data, {})
    out = []
    for key in ENVIRONMENT_KEYS:
        value = next((flat[s] for s in key.spellings if s in flat), None)
        if isinstance(value, (list, tuple)) and value and all(isinstance(x, int) for x in value):
            value = ".".join(str(x) for x in value)  # torch.cuda.nccl.version() is a tuple
        text_value = "" if value is None else str(value)
        placeholder = any(p.pattern.search(text_value) for p in PLACEHOLDERS)
        if value is None or placeholder or not re.search(r"\d+(?:\.\d+)+", text_value):
            out.append(
                Finding(
                    f"environment record lacks the {key.name} version",
                    "not recorded" if value is None else repr(value),
                    f'"{key.name}": "<major.minor[.patch]>"',
                    path,
                    key.name,
                    f"record the {key.name} version the run used (in the container: {key.how})",
                )
            )
    return out
