"""Hugging Face checkpoints: write a merged model as stock-transformers safetensors, read one back."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._fs import atomic_dir, inside, read_json
from ..converter._families import Family, arch_from_config, family_for_arch
from ..converter._model import Layout
from ..converter._pages import FileMappings
from ..converter._pwrite import Writer
from ..converter._rows import Rows
from ..converter._sourcebase import InFileMappings, ReadUpFront, Source
from ..converter._split_rules import canonical_keys, expected_shape, rule_for
from ..errors import LayoutError, MalformedFileError, ShardMismatchError, UnsupportedModelError
from ._safetensors import SafetensorsFile, header_for

__all__ = ["Source", "HFSource", "write_hf", "INDEX", "SINGLE"]

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


@dataclass(frozen=True)
class _Unit:
    """One canonical parameter and the Hub tensors made from it."""

    canonical: str | None  # None for a family's constant extras
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtype: torch.dtype
    exact: bool = True  # False: planned from the args while the source was still being read

    @property
    def nbytes(self) -> int:
        return sum(_nbytes(shape, self.dtype) for shape in self.shapes)


def _plan(src: Source, family: Family) -> list[_Unit]:
    units: list[_Unit] = []
    dtype = None
    last_layer = -1
    for key in src.keys():
        rule, layer, expert = rule_for(key)
        km, _, _ = family.map_for(key)
        exact = src.loaded(key)  # asked first: a stage may finish loading before get() returns
        meta = src.get(key, meta=True)
        dtype = dtype or meta.dtype
        parts = km.codec.to_hf(src.arch, meta)
        units.append(_Unit(key, km.hf_keys(layer, expert), tuple(p.shape for p in parts), meta.dtype, exact))
        if layer is not None and layer != last_layer:
            last_layer = layer
            if src.arch.is_moe_layer(layer):
                for extra in family.extras_for(src.arch):
                    units.append(
                        _Unit(None, (extra.hf.replace("{layer}", str(layer)),), (extra.shape(src.arch),), meta.dtype)
                    )
    return units


def _shards(units: list[_Unit], max_shard: int) -> list[list[_Unit]]:
    shards: list[list[_Unit]] = [[]]
    size = 0
    for u in units:
        if shards[-1] and size + u.nbytes > max_shard:
            shards.append([])
            size = 0
        shards[-1].append(u)
        size += u.nbytes
    return shards


def write_hf(
    src: Source,
    dst: Path,
    *,
    max_shard_size: int = 5 * 10**9,
    overwrite: bool = False,
    fsync: bool = True,
    extra_files: dict[str, bytes] | None = None,
    config_overrides: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write ``src`` as a Hugging Face directory at ``dst``, streaming one parameter at a time.

    Returns the config.json written. The directory appears only once complete.

    A source still being read (a Megatron checkpoint opened with ``background=True``) is
    planned from its args; if a parameter then arrives in another dtype than planned, the
    partial output is dropped and the whole directory is written again from the real dtypes.
    """
    counted = 0

    def count(n: int) -> None:
        nonlocal counted
        counted += n
        if progress:
            progress(n)

    def recount(n: int) -> None:  # the second pass reports only what the first did not
        nonlocal counted
        skip = min(n, counted)
        counted -= skip
        if progress and n > skip:
            progress(n - skip)

    kwargs: dict[str, Any] = {
        "max_shard_size": max_shard_size,
        "overwrite": overwrite,
        "fsync": fsync,
        "extra_files": extra_files,
        "config_overrides": config_overrides,
    }
    try:
        return _write_hf(src, dst, progress=count, **kwargs)
    except _PlanChanged:
        src.finish()  # every stage read: every dtype below is the stored one
        return _write_hf(src, dst, progress=recount, **kwargs)


class _PlanChanged(Exception):
    """A parameter planned from the args arrived with another dtype."""


def _write_hf(
    src: Source,
    dst: Path,
    *,
    max_shard_size: int,
    overwrite: bool,
    fsync: bool,
    extra_files: dict[str, bytes] | None,
    config_overrides: dict[str, Any] | None,
    progress: Callable[[int], None],
) -> dict[str, Any]:
    family = family_for_arch(src.arch)
    units = _plan(src, family)
    dtype = units[0].dtype
    config = family.hf_config(src.arch, dtype)
    config.update(config_overrides or {})
    shards = _shards(units, max_shard_size)
    names = (
        [SINGLE]
        if len(shards) == 1
        else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    with atomic_dir(dst, overwrite=overwrite, fsync=fsync) as tmp, Writer(threads=1) as writer:
        weight_map: dict[str, str] = {}
        for fname, shard in zip(names, shards, strict=True):
            entries = [(n, s, u.dtype) for u in shard for n, s in zip(u.names, u.shapes, strict=True)]
            header = header_for(entries, {"format": "pt"}, align=64)
            offsets = _offsets(entries, len(header))
            fd = os.open(tmp / fname, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            try:
                os.pwrite(fd, header, 0)
                os.ftruncate(fd, len(header) + sum(_nbytes(s, d) for _, s, d in entries))
                writer.stream(fd, _items(src, family, shard, offsets, progress), source=src.file_range)
            finally:
                os.close(fd)
            weight_map.update({n: fname for u in shard for n in u.names})
        if len(shards) > 1:
            index = {
                "metadata": {"total_size": sum(u.nbytes for u in units)},
                "weight_map": dict(sorted(weight_map.items())),
            }
            (tmp / INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
        src.finish()  # a late failure of a background read, or a check needing all stages, lands here
    return config


def _items(
    src: Source,
    family: Family,
    shard: list[_Unit],
    offsets: dict[str, int],
    progress: Callable[[int], None],
) -> Iterator[tuple[int, Rows] | Callable[[], None]]:
    """What ``Writer.stream`` writes for one file: every tensor at its offset, then (once its
    bytes are out) a step that gives the source pages back and counts progress.

    The pages of joined and strided pieces are read here, on the calling thread, while their
    blocks are copied: they are given back here too, as soon as the unit's last block is made,
    so the writer thread (which bounds the whole merge) spends no time unmapping them. It gives
    back only the pieces it writes as they are: none was mapped in where it copies file to file.
    """

    def make(u: _Unit) -> list[tuple[str, Rows]]:
        produced = list(zip(u.names, _produce(src, family, u), strict=True))
        for _, rows in produced:
            src.prefetch(rows)
        return produced

    following = make(shard[0]) if shard else []
    for i, u in enumerate(shard):
        produced = following
        following = make(shard[i + 1]) if i + 1 < len(shard) else []  # read ahead while this one is written
        for name, rows in produced:
            if rows.shape != u.shapes[u.names.index(name)] or rows.dtype != u.dtype:
                if not u.exact:
                    raise _PlanChanged(name)
                raise ShardMismatchError(f"produced {rows.shape} {rows.dtype}, planned {u.shapes} {u.dtype}", key=name)
            yield offsets[name], rows
        for _, rows in produced:  # every block of the unit is made (Writer.stream asks for more)
            src.release(rows, copied=True)

        def done(produced: list[tuple[str, Rows]] = produced, n: int = u.nbytes) -> None:
            for _, rows in produced:
                src.release(rows, copied=False)
            progress(n)

        yield done


def _nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    n = dtype.itemsize
    for s in shape:
        n *= s
    return n


def _offsets(entries: list[tuple[str, tuple[int, ...], torch.dtype]], start: int) -> dict[str, int]:
    """File offset of every tensor's bytes, in header order (as ``header_for`` lays them out)."""
    out, at = {}, start
    for name, shape, dtype in entries:
        out[name] = at
        at += _nbytes(shape, dtype)
    return out


def _produce(src: Source, family: Family, unit: _Unit) -> Iterator[Rows]:
    if unit.canonical is None:
        yield Rows.of(torch.zeros(unit.shapes[0], dtype=unit.dtype))
        return
    km, _, _ = family.map_for(unit.canonical)
    yield from km.codec.to_hf(src.arch, src.get(unit.canonical))


def read_weight_map(model_dir: Path) -> dict[str, Path]:
    """The safetensors index's ``weight_map`` as tensor name -> shard path, every shard a plain
    file name in ``model_dir`` (an absolute name, ``../``, a subdirectory or a link that leaves the
    directory is refused, never opened).

    Raises:
        MalformedFileError: The index is not a JSON object with a ``weight_map`` of names to
            file names, or a shard name leaves the directory; naming the index and the key.
    """
    index = model_dir / INDEX
    data = read_json(index)
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict):
        raise MalformedFileError(
            "no weight_map object", path=index, key="weight_map", fix="write the index as save_pretrained does"
        )
    out: dict[str, Path] = {}
    for key, fname in weight_map.items():
        if not isinstance(fname, str):
            raise MalformedFileError(
                f"shard name {fname!r} is not a string", path=index, key=f"weight_map.{key}", fix="name the shard file"
            )
        file = inside(model_dir, fname) if "/" not in fname and "\\" not in fname else None
        if file is None or file.parent != model_dir.resolve():
            raise MalformedFileError(
                f"shard name {fname!r} leaves the model directory",
                path=index,
                key=f"weight_map.{key}",
                fix="name shards by their file names in the model directory",
            )
        out[key] = file
    return out


class HFSource(ReadUpFront, InFileMappings):
    """A Hugging Face directory (config.json + safetensors) as canonical parameters."""

    format = "hf"

    def __init__(self, path: Path, *, check_shapes: bool = True) -> None:
        """``check_shapes=False``: do not check each tensor's shape against config.json (for a
        caller that compares every tensor with another checkpoint's and reports that instead)."""
        self.path = path
        cfg_path = path / "config.json"
        if not cfg_path.is_file():
            raise LayoutError("no config.json", path=path, fix="pass a Hugging Face model directory")
        self.config = read_json(cfg_path)
        if not isinstance(self.config, dict):
            raise MalformedFileError("config.json is not an object", path=cfg_path)
        self.family, self.arch = arch_from_config(self.config, source=cfg_path)
        self.layout = Layout()
        self.pages = FileMappings()
        self._files: dict[str, SafetensorsFile] = {}
        self._where: dict[str, SafetensorsFile] = {}
        index = path / INDEX
        if index.is_file():
            shards = read_weight_map(path)
            for file in sorted(set(shards.values())):
                self._open(file)
            for key, file in shards.items():
                if key not in self._files[file.name]:
                    raise MalformedFileError(
                        f"index names {file.name} but the tensor is not there", path=index, key=key
                    )
        elif (path / SINGLE).is_file():
            self._open(path / SINGLE)
        else:
            raise LayoutError("no model.safetensors or index", path=path, fix="pass a safetensors checkpoint")
        self._check_tensors(check_shapes)

    def _open(self, file: Path) -> None:
        if not file.is_file():
            raise LayoutError("shard named by the index is missing", path=file)
        st = SafetensorsFile(file, self.pages)
        self._files[file.name] = st
        for key in st.keys():
            if key in self._where:
                raise MalformedFileError("tensor appears in two shards", path=file, key=key)
            self._where[key] = st

    def _check_tensors(self, check_shapes: bool) -> None:
        """The tensors are the ones config.json implies (and, with ``check_shapes``, of the shapes
        it gives: the canonical TP=1 shape through the family's codec)."""
        expected: dict[str, tuple[int, ...] | None] = {}  # name -> shape, None when not checked
        for key in canonical_keys(self.arch):
            rule, layer, expert = rule_for(key)
            km, _, _ = self.family.map_for(key)
            names = km.hf_keys(layer, expert)
            if check_shapes:
                full = Rows.of(torch.empty(expected_shape(rule, self.arch), device="meta"))
                expected.update((n, p.shape) for n, p in zip(names, km.codec.to_hf(self.arch, full), strict=True))
            else:
                expected.update(dict.fromkeys(names))
        extras = {
            e.hf.replace("{layer}", str(layer))
            for layer in range(self.arch.num_layers)
            if self.arch.is_moe_layer(layer)
            for e in self.family.extras_for(self.arch)
        }
        present = set(self._where)
        missing = sorted(set(expected) - present)
        unexpected = sorted(present - set(expected) - extras)
        if missing or unexpected:
            raise LayoutError(
                "tensors do not match config.json: "
                + (f"missing {', '.join(missing[:6])} " if missing else "")
                + (f"unexpected {', '.join(unexpected[:6])}" if unexpected else ""),
                path=self.path,
                fix="the config and the weights must describe the same model",
            )
        for name, want in expected.items():
            got = self._where[name].shape(name)
            if want is not None and tuple(got) != tuple(want):
                raise ShardMismatchError(
                    f"shape {list(got)} contradicts config.json, which gives {list(want)}",
                    path=self._where[name].path,
                    key=name,
                    fix="the config and the weights must describe the same model",
                )
        for name in sorted(extras & present):
            t = self._where[name].tensor(name)
            if t.numel() and bool(t.any()):
                raise UnsupportedModelError(
                    "this tensor must be zero to have a Megatron counterpart", path=self._where[name].path, key=name
                )

    def keys(self) -> list[str]:
        return canonical_keys(self.arch)

    def hf_tensor(self, name: str) -> torch.Tensor:
        return self._where[name].tensor(name)

    def get(self, key: str, *, meta: bool = False) -> Rows:
        rule, layer, expert = rule_for(key)
        km, _, _ = self.family.map_for(key)
        parts = []
        for name in km.hf_keys(layer, expert):
            t = self.hf_tensor(name)
            parts.append(Rows.of(t.to("meta") if meta else t))
        return km.codec.from_hf(self.arch, tuple(parts))

    def describe(self) -> dict[str, Any]:
        return {"format": "hf", "architecture": self.family.architecture, "files": sorted(self._files)}
