"""Preprocessing snapshots: a syrupy extension for tensors, readable on disk and in a diff.

A snapshot is a text file laid out so that a changed value shows as a changed line in a code
review: a JSON header over several lines (the release version that recorded it, the library
versions, the processor config), then one entry per output, one line per row of its last
dimension (wrapped at 32 values), each line starting with the index of its first value:

    # pytest-vla preprocessing snapshot
    {
      "case": "image_red",
      ...
    }
    input_ids: int64 [1, 42] exact
      (0, 0) 101 7 7 9 ...
    pixel_values: float32 [1, 3, 32, 32] q8 lo=-1.0 hi=1.0 hex
      (0, 0, 0, 0) 00 1f 2a ...

Integer tensors compare exactly. Float tensors are stored as 8-bit levels of their recorded
range (two hex digits each, exact), and compare strictly in dtype and shape and within one level
(an interpolation or antialias change is tens of levels). A mismatch is reported as: what differs
(shape/dtype, how many elements, max abs/rel error and where) and which processor config keys
changed since the snapshot was recorded. Snapshots in the first layout (a one-line header,
base64 levels, 32 integers a line) still read.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch

from ..errors import MalformedFileError

__all__ = ["SnapshotData", "serialize", "parse", "compare", "load_snapshot", "snapshot_images", "SNAPSHOT_SUFFIX"]

SNAPSHOT_SUFFIX: Final = ".vla.txt"

_LEVELS: Final = 255
_PER_LINE: Final = 32  # values per body line


@dataclass
class SnapshotData:
    """What a test records: named outputs plus the header that explains them."""

    outputs: dict[str, Any]
    header: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Entry:
    name: str
    kind: str  # "exact" | "q8" | "json"
    dtype: str = ""
    shape: tuple[int, ...] = ()
    ints: tuple[int, ...] = ()
    levels: bytes = b""
    lo: float = 0.0
    hi: float = 0.0
    value: Any = None


def _as_array(value: Any) -> np.ndarray | None:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        return (t.float() if t.dtype == torch.bfloat16 else t).numpy()
    if isinstance(value, np.ndarray):
        return value
    return None


def _dtype_name(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return str(value.dtype).removeprefix("torch.")
    return str(value.dtype)


def _entry(name: str, value: Any) -> _Entry:
    arr = _as_array(value)
    if arr is None:
        return _Entry(name, "json", value=json.loads(json.dumps(value, default=str)))
    shape = tuple(int(s) for s in arr.shape)
    dtype = _dtype_name(value)
    if arr.dtype.kind in "biu":
        return _Entry(name, "exact", dtype, shape, ints=tuple(int(x) for x in arr.reshape(-1)))
    flat = arr.astype(np.float64).reshape(-1)
    lo, hi = (float(flat.min()), float(flat.max())) if flat.size else (0.0, 0.0)
    return _Entry(name, "q8", dtype, shape, levels=_quantize(flat, lo, hi).tobytes(), lo=lo, hi=hi)


def _step(lo: float, hi: float) -> float:
    return (hi - lo) / _LEVELS if hi > lo else 0.0


def _quantize(flat: np.ndarray, lo: float, hi: float) -> np.ndarray:
    step = _step(lo, hi)
    if step == 0.0:
        return np.zeros(flat.shape, dtype=np.uint8)
    return np.clip(np.rint((flat - lo) / step), 0, _LEVELS).astype(np.uint8)


def _rows(values: list[str], shape: tuple[int, ...]) -> list[str]:
    """``values`` (flattened ``shape``) as lines: one row of the last dimension each, wrapped at
    _PER_LINE, prefixed with the index of the line's first value."""
    width = shape[-1] if shape else 1
    lines = []
    for row in range(0, len(values), width or 1):
        for i in range(row, row + max(width, 1), _PER_LINE):
            chunk = values[i : min(i + _PER_LINE, row + max(width, 1))]
            if chunk:
                lines.append(f"  {_where(i, shape)} " + " ".join(chunk))
    return lines


def serialize(data: SnapshotData) -> str:
    header = json.dumps(data.header, sort_keys=True, ensure_ascii=False, indent=2)
    lines = ["# pytest-vla preprocessing snapshot", *header.splitlines()]
    for name in sorted(data.outputs):
        e = _entry(name, data.outputs[name])
        if e.kind == "json":
            lines.append(f"{name}: json {json.dumps(e.value, sort_keys=True, ensure_ascii=False)}")
        elif e.kind == "exact":
            lines.append(f"{name}: {e.dtype} {list(e.shape)} exact")
            lines.extend(_rows([str(x) for x in e.ints], e.shape))
        else:
            lines.append(f"{name}: {e.dtype} {list(e.shape)} q8 lo={e.lo!r} hi={e.hi!r} hex")
            lines.extend(_rows([f"{x:02x}" for x in e.levels], e.shape))
    return "\n".join(lines) + "\n"


def _values(line: str) -> str:
    """A body line without its ``(i, j, ...)`` index prefix."""
    line = line.strip()
    return line.partition(") ")[2] if line.startswith("(") else line


def parse(text: str) -> tuple[dict[str, Any], dict[str, _Entry]]:
    lines = text.splitlines()
    if len(lines) < 2 or not lines[0].startswith("# pytest-vla"):
        raise ValueError("not a pytest-vla snapshot")
    if lines[1] == "{":  # the header over several lines, up to its closing brace
        end = lines.index("}", 1) if "}" in lines else len(lines) - 1
        header, i = json.loads("\n".join(lines[1 : end + 1])), end + 1
    else:  # the first layout: one line
        header, i = json.loads(lines[1]), 2
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    entries: dict[str, _Entry] = {}
    while i < len(lines):
        name, _, rest = lines[i].partition(": ")
        i += 1
        body = []
        while i < len(lines) and lines[i].startswith("  "):
            body.append(_values(lines[i]))
            i += 1
        if rest.startswith("json "):
            entries[name] = _Entry(name, "json", value=json.loads(rest[5:]))
            continue
        dtype, rest = rest.split(" ", 1)
        shape_text, _, tail = rest.partition("] ")
        shape = tuple(json.loads(shape_text + "]"))
        if not all(type(n) is int and n >= 0 for n in shape):
            raise ValueError(f"{name}: shape {list(shape)} is not a list of sizes")
        if tail == "exact":
            ints = tuple(int(x) for line in body for x in line.split())
            _check_count(name, len(ints), shape)
            entries[name] = _Entry(name, "exact", dtype, shape, ints=ints)
        else:
            words = tail.split()[1:]
            fields = dict(kv.split("=", 1) for kv in words if "=" in kv)
            if "hex" in words:
                levels = bytes(int(x, 16) for line in body for x in line.split())
            else:  # the first layout
                levels = base64.b64decode("".join(body), validate=True)
            _check_count(name, len(levels), shape)
            lo, hi = float(fields["lo"]), float(fields["hi"])
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise ValueError(f"{name}: range lo={lo!r} hi={hi!r} is not two finite numbers, lo <= hi")
            entries[name] = _Entry(name, "q8", dtype, shape, levels=levels, lo=lo, hi=hi)
    return header, entries


def _check_count(name: str, n: int, shape: tuple[int, ...]) -> None:
    if n != math.prod(shape):
        raise ValueError(f"{name}: {n} values recorded for shape {list(shape)}")


def load_snapshot(path: Path) -> tuple[str, dict[str, Any], dict[str, _Entry]]:
    """A recorded snapshot file: its text, header and entries.

    Raises:
        MalformedFileError: The file is not UTF-8 or not a well-formed snapshot (truncated,
            edited, a value count that does not fit its shape), naming the file and the problem.
    """
    try:
        text = path.read_bytes().decode("utf-8")
        header, entries = parse(text)
    except (
        ValueError,
        KeyError,
        IndexError,
        RecursionError,
        binascii.Error,
    ) as e:  # UnicodeDecodeError, JSONDecodeError too
        raise MalformedFileError(
            f"unreadable snapshot: {e}",
            path=path,
            fix="restore the file shipped with the release (release.json records its SHA-256)",
        ) from e
    return text, header, entries


def _where(index: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(x) for x in np.unravel_index(index, shape)) if shape else ()


def _compare_entry(got: _Entry, want: _Entry) -> str | None:
    if got.kind != want.kind or got.dtype != want.dtype or got.shape != want.shape:
        return f"{want.name}: {got.dtype} {list(got.shape)}, recorded {want.dtype} {list(want.shape)}"
    if want.kind == "json":
        return None if got.value == want.value else f"{want.name}: {got.value!r}, recorded {want.value!r}"
    if want.kind == "exact":
        a, b = np.array(got.ints, dtype=np.int64), np.array(want.ints, dtype=np.int64)
        bad = np.nonzero(a != b)[0]
        if not bad.size:
            return None
        first = int(bad[0])
        return (
            f"{want.name}: {bad.size} of {a.size} values differ; first at {_where(first, want.shape)}: "
            f"{int(a[first])}, recorded {int(b[first])}"
        )
    step, got_step = _step(want.lo, want.hi), _step(got.lo, got.hi)
    recorded = want.lo + np.frombuffer(want.levels, dtype=np.uint8).astype(np.float64) * step
    got_values = got.lo + np.frombuffer(got.levels, dtype=np.uint8).astype(np.float64) * got_step
    err = np.abs(got_values - recorded)
    # one level of the recorded range, plus the rounding of both sides to their 8-bit levels
    allowed = 1.5 * step + 0.5 * got_step + 1e-9 * np.abs(recorded)
    # NaN (a computed output that is not finite) is never within tolerance
    bad = np.nonzero(~(err <= allowed))[0]
    if not bad.size:
        return None
    worst = int(np.nan_to_num(err, nan=np.inf).argmax())
    rel = float(err[worst] / max(abs(recorded[worst]), 1e-12))
    return (
        f"{want.name}: {bad.size} of {err.size} values off by more than one 8-bit level "
        f"(level {step:.4g}); max abs error {float(err[worst]):.4g} (rel {rel:.3g}) at "
        f"{_where(worst, want.shape)}: {got_values[worst]:.6g}, recorded {recorded[worst]:.6g}"
    )


def _flat(config: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(config, Mapping):
        out: dict[str, Any] = {}
        for k, v in config.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): config}


def compare(received: str, recorded: str) -> list[str]:
    """Readable differences between two serialized snapshots; empty when they match."""
    got_header, got = parse(received)
    want_header, want = parse(recorded)
    lines = []
    for name in sorted(want.keys() - got.keys()):
        lines.append(f"{name}: missing from the outputs")
    for name in sorted(got.keys() - want.keys()):
        lines.append(f"{name}: not in the snapshot")
    for name in sorted(got.keys() & want.keys()):
        problem = _compare_entry(got[name], want[name])
        if problem:
            lines.append(problem)
    if lines:
        a, b = _flat(got_header.get("processor_config", {})), _flat(want_header.get("processor_config", {}))
        changed = sorted(k for k in a.keys() | b.keys() if a.get(k, "<absent>") != b.get(k, "<absent>"))
        for key in changed:
            lines.append(f"processor config {key}: {a.get(key, '<absent>')!r}, recorded {b.get(key, '<absent>')!r}")
        if not changed:
            lines.append("processor config: unchanged since the snapshot was recorded")
    return lines


def _dequantized(e: _Entry) -> np.ndarray:
    return (e.lo + np.frombuffer(e.levels, dtype=np.uint8).astype(np.float64) * _step(e.lo, e.hi)).reshape(e.shape)


def _png(pixels: np.ndarray) -> str:
    """``[C, H, W]`` values in 0..255 (C = 1 or 3) as a base64 PNG."""
    import io

    from PIL import Image

    arr = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode()


def snapshot_images(received: str, recorded: str) -> dict[str, dict[str, str]]:
    """For each image-like float output (``[..., C, H, W]``, C 1 or 3) whose values differ from the
    recorded snapshot: its first image as ``expected``, ``actual`` and ``difference`` (|actual -
    expected|, scaled to its maximum) base64 PNGs, on the recorded value range. Empty when no image
    differs.

    Example:
        >>> snapshot_images(serialize(data), recorded_text)  # doctest: +SKIP
        {'pixel_values': {'expected': 'iVBORw0...', 'actual': '...', 'difference': '...'}}
    """
    _, got = parse(received)
    _, want = parse(recorded)
    out: dict[str, dict[str, str]] = {}
    for name in sorted(got.keys() & want.keys()):
        a, b = got[name], want[name]
        if b.kind != "q8" or len(b.shape) < 3 or b.shape[-3] not in (1, 3) or a.shape != b.shape:
            continue
        if _compare_entry(a, b) is None:
            continue
        actual, expected = _dequantized(a), _dequantized(b)
        first = (0,) * (len(b.shape) - 3)
        x, y = actual[first], expected[first]
        span = (b.hi - b.lo) or 1.0
        diff = np.abs(x - y)
        out[name] = {
            "expected": _png((y - b.lo) / span * 255),
            "actual": _png((x - b.lo) / span * 255),
            "difference": _png(diff / (diff.max() or 1.0) * 255),
        }
    return out
