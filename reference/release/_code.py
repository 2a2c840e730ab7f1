"""Code in a release: what would make transformers import or run something the release ships.

A release is data. A config that names classes by ``auto_map`` asks transformers to import them
from the model directory (``trust_remote_code``); the plugin never grants that, so such a release
does not load in stock transformers, and Python files in ``model/`` are code no check can vouch for.
Nothing here imports or executes anything: the files are read as JSON and listed by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from .._fs import read_json
from ..errors import ReleaseError
from ..findings import Finding
from ._manifest import IGNORED_PARTS

__all__ = ["CODE_SUFFIXES", "remote_code"]

# files a Python process could import or load as code
CODE_SUFFIXES: Final = (".py", ".pyc", ".pyo", ".pyd", ".so", ".dylib", ".dll", ".pth")
_NO_REMOTE_CODE: Final = (
    "remove 'auto_map': the release must load in stock transformers classes without trust_remote_code "
    "(model_type, architectures and processor_class name them)"
)


def remote_code(model_dir: Path) -> list[Finding]:
    """``auto_map`` keys in the model directory's JSON files, and code files in it (any depth).

    Example:
        >>> remote_code(Path("golden/dense/model"))  # doctest: +SKIP
        []
    """
    out = []
    for path in sorted(model_dir.glob("*.json")):
        try:
            data = read_json(path)
        except ReleaseError:
            continue  # an unreadable file is its own area's finding
        if isinstance(data, dict) and "auto_map" in data:
            out.append(
                Finding(
                    "the release needs remote code",
                    f"auto_map {data['auto_map']!r}"[:300],
                    "no auto_map: stock transformers classes",
                    path,
                    "auto_map",
                    _NO_REMOTE_CODE,
                )
            )
    for path in sorted(model_dir.rglob("*")):
        # a byte-code cache beside no source is not importable, and tools leave them: not the release's
        if IGNORED_PARTS.intersection(path.relative_to(model_dir).parts):
            continue
        if path.suffix.lower() in CODE_SUFFIXES and (path.is_file() or path.is_symlink()):
            out.append(
                Finding(
                    "code in the model directory",
                    f"{path.name} ({path.suffix} file)",
                    "weights, configs and tokenizer files only",
                    path,
                    None,
                    "remove it: a release ships no code that loading it could run",
                )
            )
    return out
