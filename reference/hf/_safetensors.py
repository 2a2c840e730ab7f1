"""Stream safetensors: write tensors as row blocks without assembling them; read by mmap.

The format is an 8-byte little-endian header length, a JSON header (name -> dtype, shape,
data_offsets), then raw little-endian bytes. Writing it directly lets the merge copy shard
bytes straight to disk; reading it through mmap makes every tensor a zero-copy view.
"""

from __future__ import annotations

import json
import mmap
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final

import torch

from ..converter._pages import FileMappings
from ..converter._rows import Rows
from ..errors import MalformedFileError

__all__ = ["DTYPE_CODES", "SafetensorsFile", "header_for", "write_header", "write_rows", "parse_size"]

DTYPE_CODES: Final[dict[torch.dtype, str]] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
}
_CODE_DTYPES: Final = {v: k for k, v in DTYPE_CODES.items()}
_MAX_HEADER: Final = 100 * 1024 * 1024


def parse_size(text: str) -> int:
    """``"5GB"`` -> 5_000_000_000; ``"2GiB"`` -> 2 * 1024**3 (Hugging Face's convention).

    >>> parse_size("5GB"), parse_size("10MiB"), parse_size("123")
    (5000000000, 10485760, 123)
    """
    units = {
        "KIB": 2**10,
        "MIB": 2**20,
        "GIB": 2**30,
        "TIB": 2**40,
        "KB": 10**3,
        "MB": 10**6,
        "GB": 10**9,
        "TB": 10**12,
        "B": 1,
    }
    t = text.strip().upper()
    unit = next((u for u in units if t.endswith(u)), "B")
    number = t[: -len(unit)].strip() if t.endswith(unit) else t
    factor = units[unit]
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"not a size: {text!r} (e.g. 5GB, 500MB, 2GiB)") from None
    if value <= 0:
        raise ValueError(f"size must be positive: {text!r}")
    return int(value * factor)


def header_for(
    entries: Iterable[tuple[str, tuple[int, ...], torch.dtype]], metadata: Mapping[str, str], *, align: int = 8
) -> bytes:
    """The header bytes for tensors in the given order, padded with spaces so that the data starts
    at a multiple of ``align`` (8, like the safetensors library; the converter uses 64, the
    alignment of torch's zip records, because copies between buffers with different offsets
    modulo a cache line run at a fraction of the speed)."""
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    offset = 0
    for name, shape, dtype in entries:
        n = dtype.itemsize
        for s in shape:
            n *= s
        header[name] = {"dtype": DTYPE_CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-(len(raw) + 8) % align)
    return struct.pack("<Q", len(raw)) + raw


def write_header(f: BinaryIO, header: bytes) -> None:
    f.write(header)


def write_rows(f: BinaryIO, rows: Rows) -> int:
    """Write the bytes of ``rows`` piece by piece; returns the byte count."""
    n = 0
    for chunk in rows.byte_chunks():
        f.write(chunk)
        n += len(chunk)
    return n


@dataclass(frozen=True)
class _Entry:
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int
    end: int


class SafetensorsFile:
    """A safetensors file opened by mmap; tensors are views (no copy until used)."""

    def __init__(self, path: Path, pages: FileMappings | None = None) -> None:
        self.path = path
        try:
            size = path.stat().st_size
            with path.open("rb") as f:
                raw_len = f.read(8)
                if len(raw_len) != 8:
                    raise MalformedFileError("truncated: no header", path=path, fix="re-copy the file")
                (n,) = struct.unpack("<Q", raw_len)
                if n > min(_MAX_HEADER, size - 8):
                    raise MalformedFileError(f"header length {n} exceeds the file", path=path, fix="re-copy the file")
                header = json.loads(f.read(n))
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) if size else None
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
            raise MalformedFileError(f"not a safetensors file: {e}", path=path, fix="re-copy the file") from e
        if not isinstance(header, dict):
            raise MalformedFileError("header is not a JSON object", path=path)
        self.metadata = header.pop("__metadata__", None) or {}
        self._base = 8 + n
        data_len = size - self._base
        self._entries: dict[str, _Entry] = {}
        for name, info in header.items():
            try:
                dtype = _CODE_DTYPES[info["dtype"]]
                shape = tuple(int(s) for s in info["shape"])
                begin, end = (int(x) for x in info["data_offsets"])
            except (KeyError, TypeError, ValueError) as e:
                raise MalformedFileError(f"bad header entry: {e!r}", path=path, key=name) from e
            numel = 1
            for s in shape:
                numel *= s
            if end - begin != numel * dtype.itemsize or not 0 <= begin <= end <= data_len:
                raise MalformedFileError(
                    f"data_offsets {begin}:{end} do not fit shape {shape} {info['dtype']} in {data_len} data bytes",
                    path=path,
                    key=name,
                    fix="the file is truncated or corrupt; re-copy it",
                )
            self._entries[name] = _Entry(dtype, shape, begin, end)
        if pages is not None and self._mm is not None:
            import ctypes

            addr = ctypes.addressof(ctypes.c_char.from_buffer(self._mm))
            pages.register_range(addr, len(self._mm))

    def keys(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def shape(self, key: str) -> tuple[int, ...]:
        return self._entries[key].shape

    def dtype(self, key: str) -> torch.dtype:
        return self._entries[key].dtype

    def tensor(self, key: str) -> torch.Tensor:
        e = self._entries[key]
        if e.end == e.begin or self._mm is None:
            return torch.empty(e.shape, dtype=e.dtype)
        flat = torch.frombuffer(self._mm, dtype=torch.uint8, count=e.end - e.begin, offset=self._base + e.begin)
        return flat.view(e.dtype).reshape(e.shape)

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        for key in self._entries:
            yield key, self.tensor(key)
