"""Reproduction assets: the config matrix, the launch script and the environment record (chapter 24.4).

``configs/`` holds one file (JSON or YAML, Megatron flag names with ``-`` or ``_``, nesting
allowed) per model size, each with the chapter's matrix: layers, hidden, ffn, heads, experts and
top-k (for a mixture of experts), batch, learning-rate schedule, parallel sizes and precision.
The file for this release's size (``release.json``'s ``config``, else the one whose architecture
is ``config.json``'s) must agree with ``config.json`` and with the checkpoint's arguments. The
launch script must exist, be executable, pass ``bash -n`` and launch with the checkpoint's
parallel sizes; ``docker/environment.json`` records the Python, torch, CUDA and NCCL versions.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import torch
import yaml

from .._fs import inside, read_text
from .._yaml import safe_load
from ..converter._model import Arch, Layout
from ..errors import MalformedFileError
from ..findings import Finding

# a training config is a few KB of flags
MAX_CONFIG_BYTES = 1 << 20

__all__ = [
    "Need",
    "MatrixKey",
    "MATRIX",
    "PRECISION_KEYS",
    "config_files",
    "read_config",
    "check_matrix",
    "select_config",
    "compare_config_arch",
    "compare_config_args",
]

CONFIG_SUFFIXES: Final = (".json", ".yaml", ".yml")


class Need(enum.Enum):
    ALWAYS = "always"
    MOE = "for a mixture of experts"
    OPTIONAL = "optional"


@dataclass(frozen=True)
class MatrixKey:
    """One row of the chapter's config matrix.

    ``arch``/``layout`` name the field it must equal; ``args`` the Megatron argument it must equal.
    """

    name: str  # Megatron flag without the leading dashes
    group: str
    need: Need
    aliases: tuple[str, ...] = ()
    arch: str | None = None
    layout: str | None = None
    args: str | None = None


MATRIX: Final[tuple[MatrixKey, ...]] = (
    MatrixKey("num-layers", "architecture", Need.ALWAYS, arch="num_layers"),
    MatrixKey("hidden-size", "architecture", Need.ALWAYS, arch="hidden_size"),
    MatrixKey("ffn-hidden-size", "architecture", Need.ALWAYS, arch="ffn_hidden_size"),
    MatrixKey("num-attention-heads", "architecture", Need.ALWAYS, arch="num_attention_heads"),
    MatrixKey("num-query-groups", "architecture", Need.OPTIONAL, arch="num_query_groups"),
    MatrixKey("num-experts", "architecture", Need.OPTIONAL, ("moe-num-experts",), arch="num_experts"),
    MatrixKey("moe-router-topk", "architecture", Need.MOE, ("moe-top-k", "moe-topk"), arch="moe_router_topk"),
    MatrixKey("moe-ffn-hidden-size", "architecture", Need.OPTIONAL, arch="moe_ffn_hidden_size"),
    MatrixKey("moe-layer-freq", "architecture", Need.OPTIONAL, arch="moe_layers"),
    MatrixKey("max-position-embeddings", "architecture", Need.OPTIONAL, arch="max_position_embeddings"),
    MatrixKey("seq-length", "training", Need.OPTIONAL, args="seq_length"),
    MatrixKey("global-batch-size", "training", Need.ALWAYS, args="global_batch_size"),
    MatrixKey("micro-batch-size", "training", Need.OPTIONAL, args="micro_batch_size"),
    MatrixKey("lr-decay-style", "training", Need.ALWAYS, args="lr_decay_style"),
    MatrixKey("lr", "training", Need.ALWAYS, args="lr"),
    MatrixKey("min-lr", "training", Need.OPTIONAL, args="min_lr"),
    MatrixKey("lr-warmup-iters", "training", Need.OPTIONAL, args="lr_warmup_iters"),
    MatrixKey("weight-decay", "training", Need.OPTIONAL, args="weight_decay"),
    MatrixKey("train-iters", "training", Need.OPTIONAL, args="train_iters"),
    MatrixKey("tensor-model-parallel-size", "parallel", Need.ALWAYS, layout="tp"),
    MatrixKey("pipeline-model-parallel-size", "parallel", Need.ALWAYS, layout="pp"),
    MatrixKey("expert-model-parallel-size", "parallel", Need.OPTIONAL, layout="ep"),
)
# Any one of these states the precision (the chapter's fp8-format / optimizer-precision rows).
PRECISION_KEYS: Final = ("precision", "params-dtype", "bf16", "fp16", "fp8-format", "optimizer-precision")
_PRECISIONS: Final = {
    "bf16": "bf16",
    "bfloat16": "bf16",
    "fp16": "fp16",
    "float16": "fp16",
    "half": "fp16",
    "fp32": "fp32",
    "float32": "fp32",
    "float": "fp32",
}
_DTYPE_PRECISION: Final = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}
_ABSENT: Final = frozenset({"n/a", "na", "none", "null", "-", ""})
_BY_NAME: Final[dict[str, MatrixKey]] = {n: k for k in MATRIX for n in (k.name, *k.aliases)}


# -- config matrix --------------------------------------------------------------------------------


def config_files(configs_dir: Path) -> list[Path]:
    """The config files of ``configs/`` (JSON or YAML), sorted."""
    return sorted(p for p in configs_dir.iterdir() if p.is_file() and p.suffix.lower() in CONFIG_SUFFIXES)


def flatten_config(data: Mapping[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    for k, v in data.items():
        if isinstance(v, Mapping):
            flatten_config(v, out)
        else:
            out.setdefault(str(k).strip().lower().replace("_", "-").lstrip("-"), v)
    return out


def read_config(path: Path) -> dict[str, Any]:
    """A config file as ``{flag-name: value}`` (nested sections flattened, ``_`` read as ``-``)."""
    text = read_text(path, max_bytes=MAX_CONFIG_BYTES, what="config")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else safe_load(text)
    except (ValueError, RecursionError, yaml.YAMLError) as e:
        raise MalformedFileError(f"cannot read the config: {e}", path=path, fix="fix the JSON/YAML syntax") from e
    if not isinstance(data, Mapping):
        raise MalformedFileError("the config is not a mapping of flags to values", path=path)
    return flatten_config(data, {})


def _value(config: Mapping[str, Any], key: MatrixKey) -> Any:
    for name in (key.name, *key.aliases):
        v = config.get(name)
        if v is not None and not (isinstance(v, str) and v.strip().lower() in _ABSENT):
            return v
    return None


def _experts(config: Mapping[str, Any]) -> int:
    v = _value(config, _BY_NAME["num-experts"])
    try:
        return int(v) if v is not None else 0
    except (TypeError, ValueError):
        return 0


def _size(config: Mapping[str, Any]) -> tuple[Any, ...]:
    """(layers, hidden, heads, experts); a dimension that is not a number is None (no size to compare)."""
    dims = (_value(config, _BY_NAME[n]) for n in ("num-layers", "hidden-size", "num-attention-heads"))
    return tuple(v if isinstance(v, (int, float, str)) and not isinstance(v, bool) else None for v in dims) + (
        _experts(config),
    )


def check_matrix(configs_dir: Path) -> list[Finding]:
    """Every config file has the matrix's keys; one file per model size."""
    files = config_files(configs_dir)
    if not files:
        return [
            Finding(
                "no config files",
                f"nothing ending in {', '.join(CONFIG_SUFFIXES)}",
                "one file per model size",
                configs_dir,
                None,
                "add the full training config of each model size (e.g. configs/vla-1b-dense.json)",
            )
        ]
    out: list[Finding] = []
    sizes: dict[tuple[Any, ...], Path] = {}
    for f in files:
        try:
            config = read_config(f)
        except MalformedFileError as e:
            out.append(Finding("config unreadable", e.detail, None, f, None, e.fix))
            continue
        moe = _experts(config) > 1
        for key in MATRIX:
            if (key.need is Need.ALWAYS or (key.need is Need.MOE and moe)) and _value(config, key) is None:
                out.append(
                    Finding(
                        f"config lacks {key.name}",
                        "not set",
                        f"{key.name} ({key.group}{', ' + key.need.value if key.need is Need.MOE else ''})",
                        f,
                        key.name,
                        f'add "{key.name}" with the value the run used',
                    )
                )
        if not any(config.get(k) not in (None, "") for k in PRECISION_KEYS):
            out.append(
                Finding(
                    "config lacks the precision",
                    "none of " + ", ".join(PRECISION_KEYS),
                    'e.g. "precision": "bf16" and "fp8-format": "e4m3"',
                    f,
                    "precision",
                    'add "precision" (bf16, fp16 or fp32) and, for FP8 training, "fp8-format"',
                )
            )
        size = _size(config)
        if None not in size[:3]:
            if size in sizes:
                out.append(
                    Finding(
                        "two config files for one model size",
                        f"same layers/hidden/heads/experts {size} as {sizes[size].name}",
                        "one file per model size",
                        f,
                        None,
                        "merge the two files, or delete the stale one",
                    )
                )
            sizes[size] = f
    return out


def same_value(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return str(a).lower() == str(b).lower()
    try:
        fa, fb = float(a), float(b)
    except (TypeError, ValueError):
        return str(a).strip().lower() == str(b).strip().lower()
    return math.isclose(fa, fb, rel_tol=1e-9, abs_tol=0.0)


def _moe_pattern(value: Any, num_layers: int) -> tuple[bool, ...] | None:
    if isinstance(value, list):
        return tuple(bool(int(x)) for x in value)
    try:
        freq = int(value)
    except (TypeError, ValueError):
        return None
    return tuple(i % freq == 0 for i in range(num_layers)) if freq > 0 else None


def select_config(
    configs_dir: Path, manifest: Mapping[str, Any], arch: Arch, *, root: Path
) -> tuple[Path | None, list[Finding]]:
    """The config file for this release's size: release.json's ``config``, else the one matching ``arch``."""
    named = manifest.get("config")
    if named is not None and named != "":
        path = inside(root, named)
        if path is None:
            return None, [
                Finding(
                    "release.json names a config outside the release",
                    repr(named),
                    "a path relative to the release, inside it (configs/<file>)",
                    root / "release.json",
                    "config",
                    "ship the config in configs/ and name it by its path relative to the release",
                )
            ]
        if not path.is_file():
            return None, [
                Finding(
                    "release.json names a config that is not there",
                    repr(named),
                    "a file in configs/",
                    root / "release.json",
                    "config",
                    "correct release.json's 'config' or add the file",
                )
            ]
        return path, []
    want = (arch.num_layers, arch.hidden_size, arch.num_attention_heads, arch.num_experts)
    for f in config_files(configs_dir):
        try:
            size = _size(read_config(f))
        except MalformedFileError:
            continue
        if all(same_value(a, b) for a, b in zip(size, want, strict=True)):
            return f, []
    return None, [
        Finding(
            "no config for this release's size",
            "no file in configs/ has layers/hidden/heads/experts " + "/".join(str(w) for w in want),
            "the config this model was trained with",
            configs_dir,
            None,
            'add it, and name it in release.json as "config": "configs/<file>"',
        )
    ]


def compare_config_arch(config: Mapping[str, Any], arch: Arch, *, path: Path, against: str) -> list[Finding]:
    """The architecture rows of a config file against an Arch (from config.json or the args)."""
    out = []
    for key in MATRIX:
        if key.arch is None:
            continue
        value = _value(config, key)
        expected = getattr(arch, key.arch)
        if key.name == "num-experts":
            value = _experts(config)
        elif value is None:
            continue
        if key.name in ("moe-router-topk", "moe-ffn-hidden-size", "moe-layer-freq") and not arch.num_experts:
            continue
        if key.name == "moe-layer-freq":
            ok = _moe_pattern(value, arch.num_layers) == tuple(expected)
            expected = [int(x) for x in expected]
        else:
            ok = same_value(value, expected)
        if not ok:
            out.append(
                Finding(
                    f"{key.name} differs",
                    f"{value!r} in {path.name}",
                    f"{expected!r} from {against}",
                    path,
                    key.name,
                    f"set {key.name} to {expected!r} (the config of the size this release is)",
                )
            )
    return out


def _precision_from_args(args: Mapping[str, Any], arch: Arch) -> str:
    if args.get("bf16"):
        return "bf16"
    if args.get("fp16"):
        return "fp16"
    return _DTYPE_PRECISION.get(arch.params_dtype, str(arch.params_dtype))


def compare_config_args(
    config: Mapping[str, Any], arch: Arch, layout: Layout, args: Mapping[str, Any], *, path: Path, source: str
) -> list[Finding]:
    """Every matrix row of a config file against the checkpoint's arguments (where they record it)."""
    out = compare_config_arch(config, arch, path=path, against=source)
    for key in MATRIX:
        value = _value(config, key)
        if key.layout is not None:
            expected: Any = getattr(layout, key.layout)
            if value is None and key.layout == "ep" and expected != 1:
                value = 1  # absent means Megatron's default
            if value is None:
                continue
            ok = same_value(value, expected)
        elif key.args is not None and value is not None and args.get(key.args) is not None:
            expected = args[key.args]
            ok = same_value(value, expected)
            if not ok and key.name == "global-batch-size" and args.get("seq_length"):
                ok = same_value(value, int(expected) * int(args["seq_length"]))  # the chapter counts tokens
        else:
            continue
        if not ok:
            out.append(
                Finding(
                    f"{key.name} differs",
                    f"{value!r} in {path.name}",
                    f"{expected!r} from {source}",
                    path,
                    key.name,
                    f"set {key.name} to {expected!r}, as the run was trained",
                )
            )
    stated = config.get("precision") or config.get("params-dtype")
    if isinstance(stated, str) and stated.strip().lower() in _PRECISIONS:
        want = _precision_from_args(args, arch)
        if _PRECISIONS[stated.strip().lower()] != want:
            out.append(
                Finding(
                    "precision differs",
                    f"{stated!r} in {path.name}",
                    f"{want!r} from {source} (bf16/fp16 flags, params_dtype)",
                    path,
                    "precision",
                    f'set "precision" to "{want}"',
                )
            )
    return out


# -- launch script --------------------------------------------------------------------------------


# -- environment record ---------------------------------------------------------------------------
