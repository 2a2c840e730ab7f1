"""What can be said of a release's demos without running them (docs/examples.md).

A demo must parse, import only modules the environment provides (the standard library, installed
packages, its sibling files in ``examples/``), load the model's inputs through the release's own
processor (``AutoProcessor.from_pretrained``: no hand-written resizing or normalisation, the
chapter's preprocessing-drift gotcha) and name no file outside the release.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path
from typing import Final

from .._fs import read_text
from ..errors import MalformedFileError
from ..findings import Finding

__all__ = [
    "REQUIRED_EXAMPLES",
    "INVOCATIONS",
    "MAX_EXAMPLE_BYTES",
    "example_files",
    "parse_example",
    "unavailable_imports",
    "hand_preprocessing",
    "outside_paths",
]

EXAMPLES_DIR: Final = "examples"
# The demos a release ships (the chapter's 24.3), and how --vla-run-examples runs each demo it
# knows: {model} is the release's model/, {image} a golden scene image in the working directory.
REQUIRED_EXAMPLES: Final = ("cli_demo.py", "inference_example.py")
INVOCATIONS: Final[dict[str, tuple[str, ...]]] = {
    "cli_demo.py": ("--model_path", "{model}", "--image_input", "{image}", "--text_prompt", "What should the car do?"),
    "inference_example.py": ("--model_path", "{model}"),
    "interactive_demo.py": ("--model_path", "{model}", "--headless"),
}
MAX_EXAMPLE_BYTES: Final = 1 << 20
# ImageNet's and CLIP's per-channel mean and std, to three decimals: written into a demo, they
# are preprocessing done by hand beside the processor's config
_NORMALISATION: Final = frozenset(
    {0.485, 0.456, 0.406, 0.229, 0.224, 0.225, 0.481, 0.458, 0.408, 0.269, 0.261, 0.276, 0.5}
)
_ABSOLUTE: Final = re.compile(r"(/|~/|[A-Za-z]:\\)[^\s:;,'\"]+")
_PROCESSOR_FIX: Final = (
    "preprocess only through the release's processor: processor = AutoProcessor.from_pretrained(model_dir, "
    "trust_remote_code=False); batch = processor(items)"
)


def example_files(root: Path) -> list[Path]:
    """The demos: every regular ``*.py`` file directly in the release's ``examples/``, sorted."""
    folder = root / EXAMPLES_DIR
    if not folder.is_dir() or folder.is_symlink():
        return []
    return sorted(p for p in folder.glob("*.py") if p.is_file() and not p.is_symlink())


def parse_example(path: Path) -> ast.Module:
    """The demo's syntax tree; MalformedFileError naming the file (and line) when it is larger
    than MAX_EXAMPLE_BYTES, not UTF-8, or not Python."""
    text = read_text(path, max_bytes=MAX_EXAMPLE_BYTES, what="demo")
    try:
        return ast.parse(text, filename=str(path))
    except SyntaxError as e:
        raise MalformedFileError(f"not valid Python: {e.msg} (line {e.lineno})", path=path) from e
    except (ValueError, RecursionError, MemoryError) as e:
        raise MalformedFileError(f"not valid Python: {type(e).__name__}", path=path) from e


def _imports(tree: ast.Module) -> list[tuple[str, int]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.module, node.lineno))
    return out


def unavailable_imports(tree: ast.Module, path: Path) -> list[Finding]:
    """Imports of modules the environment does not provide (found without importing them)."""
    out = []
    for name, line in _imports(tree):
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or (path.parent / f"{top}.py").is_file():
            continue
        try:
            found = importlib.util.find_spec(top) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(
                Finding(
                    "demo imports a module the environment does not provide",
                    f"import {name}",
                    "the standard library, the release's dependencies, or a file beside it in examples/",
                    path,
                    name,
                    f"use only what the release's environment installs (docker/), or add {top} to it",
                    line,
                )
            )
    return out


def _from_pretrained_owners(tree: ast.Module) -> list[str]:
    """The names ``X.from_pretrained(...)`` is called on (``AutoProcessor``, ``LlamaForCausalLM``...)."""
    owners = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "from_pretrained":
            owner = node.func.value
            owners.append(
                owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else ""
            )
    return owners


def _is_255(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, int | float) and node.value in (255, 255.0)


def hand_preprocessing(tree: ast.Module, path: Path) -> list[Finding]:
    """Preprocessing written in the demo instead of the release's processor: pixel rescaling by
    255, per-channel normalisation constants, torchvision transforms; and a demo that loads the
    model but not the processor."""
    out = []

    def add(observed: str, line: int) -> None:
        out.append(
            Finding("demo preprocesses by hand", observed, "the release's processor", path, None, _PROCESSOR_FIX, line)
        )

    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div | ast.Mult | ast.FloorDiv):
            if _is_255(node.right) or (isinstance(node.op, ast.Div) and _is_255(node.left)):
                add("pixels rescaled by 255", node.lineno)
        elif isinstance(node, ast.List | ast.Tuple) and len(node.elts) >= 3:
            values = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, float)]
            if len(values) >= 3 and sum(round(v, 3) in _NORMALISATION for v in values) >= 3:
                add(f"normalisation constants {[round(v, 4) for v in values]}", node.lineno)
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if name == "Normalize":
                add(f"{ast.unparse(func)}(...)", node.lineno)
    for name, line in _imports(tree):
        if name.startswith("torchvision.transforms") or name == "albumentations":
            add(f"import {name}", line)
    owners = _from_pretrained_owners(tree)
    loads_model = any("Model" in name or "ForCausalLM" in name for name in owners)
    if loads_model and not any("Processor" in name for name in owners):
        out.append(
            Finding(
                "demo does not load the release's processor",
                "a model is loaded, no *Processor.from_pretrained",
                "AutoProcessor.from_pretrained(model_dir)",
                path,
                None,
                _PROCESSOR_FIX,
            )
        )
    return sorted(out, key=lambda f: f.line or 0)


def _docstrings(tree: ast.Module) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def outside_paths(tree: ast.Module, path: Path) -> list[Finding]:
    """String literals that name a file outside the release: absolute paths, home-relative
    paths, and paths that climb out with ``..``. (Docstrings are prose, and not read.)"""
    skip = _docstrings(tree)
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str) or id(node) in skip:
            continue
        text = node.value
        if "\n" in text or "://" in text:
            continue
        climbs = ".." in Path(text).parts
        if _ABSOLUTE.fullmatch(text) or climbs:
            out.append(
                Finding(
                    "demo names a path outside the release",
                    repr(text),
                    "a path inside the release, or one given on the command line",
                    path,
                    None,
                    "take the model directory and inputs as arguments (--model_path, --image_input) and read only them",
                    node.lineno,
                )
            )
    return out
