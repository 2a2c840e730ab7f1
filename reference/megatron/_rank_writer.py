"""Write canonical parameters as a Megatron ``torch``-format checkpoint at any valid layout.

Naming is megatron-core's local spec; every rank file holds ``model``, ``iteration``,
``checkpoint_version`` and ``args`` (a plain dict). Vocabulary rows are padded for the new TP
with zero rows: ``padded = ceil(V / (make_vocab_size_divisible_by * TP)) * that`` (Megatron's
rule); merging strips them again, so the padding never reaches a Hugging Face checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import struct
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import torch

from .._fs import atomic_dir
from ..converter._model import Arch, Layout
from ..converter._pwrite import Writer
from ..converter._rows import Rows
from ..converter._sourcebase import Source
from ..converter._split_rules import Scope, Split, canonical_keys, extra_state_keys, format_key, rule_for
from ..converter._tp import split_tp
from ..errors import LayoutError, ShardMismatchError, UnsupportedModelError
from ._checkpoint_dir import RANK_FILE, TRACKER, rank_dir_name

__all__ = ["write_megatron", "check_layout", "CHECKPOINT_VERSION"]

CHECKPOINT_VERSION: Final = 3.0


def check_layout(arch: Arch, layout: Layout) -> None:
    """Raise if ``arch`` cannot be split as ``layout`` (with the reason and the fix)."""
    problems = []
    if min(layout.tp, layout.pp, layout.ep) < 1:
        problems.append("sizes must be >= 1")
    if arch.num_layers % layout.pp:
        problems.append(f"{arch.num_layers} layers do not split evenly over PP={layout.pp}")
    g, t = arch.num_query_groups, layout.tp
    if not (g % t == 0 or (t % g == 0 and arch.heads_per_group % (t // g) == 0 and arch.qkv_rows % t == 0)):
        problems.append(f"{g} query groups of {arch.heads_per_group} heads cannot be split over TP={t}")
    for name, size in (("ffn_hidden_size", arch.ffn_hidden_size), ("hidden_size", arch.hidden_size)):
        if size % t:
            problems.append(f"{name}={size} is not divisible by TP={t}")
    if arch.num_experts:
        if arch.num_experts % layout.ep:
            problems.append(f"{arch.num_experts} experts do not split over EP={layout.ep}")
        if arch.moe_ffn_hidden_size % layout.expert_tp:
            problems.append(f"moe_ffn_hidden_size={arch.moe_ffn_hidden_size} is not divisible by TP={t}")
    elif layout.ep > 1:
        problems.append("EP>1 needs experts")
    if layout.etp is not None and layout.etp != layout.tp:
        problems.append("expert tensor parallel size different from TP is not written")
    if layout.vpp != 1:
        problems.append("virtual pipeline stages are not written")
    if problems:
        raise LayoutError(
            f"cannot write {layout.describe()}: " + "; ".join(problems), fix="choose sizes that divide the model"
        )


def _stage_keys(arch: Arch, layout: Layout, pp: int) -> list[tuple[str, str]]:
    """(canonical key, local key) for one pipeline stage, local layers numbered from 0."""
    per_stage = arch.num_layers // layout.pp
    lo, hi = pp * per_stage, (pp + 1) * per_stage
    out = []
    for key in canonical_keys(arch):
        rule, layer, expert = rule_for(key)
        if rule.scope is Scope.FIRST and pp != 0 or rule.scope is Scope.LAST and pp != layout.pp - 1:
            continue
        if layer is not None and not lo <= layer < hi:
            continue
        out.append((key, format_key(rule.template, None if layer is None else layer - lo, expert)))
    if arch.tied and layout.pp > 1 and pp == layout.pp - 1:
        # megatron-core: the last stage keeps its own copy of the tied embedding as output_layer
        out.append(("embedding.word_embeddings.weight", "output_layer.weight"))
    return out


def _placeholder(rows: Rows) -> torch.Tensor:
    """An uninitialised tensor of the part's shape: torch.save under skip_data reads no bytes of it."""
    return torch.empty(rows.shape, dtype=rows.dtype)


_STORAGE: Final = re.compile(r"/data/(\d+)\Z")


@dataclass(frozen=True)
class _Record:
    """Where one storage's bytes and the three copies of its CRC-32 live in a torch zip."""

    name: str
    size: int
    data: int  # offset of the first data byte
    crc_fields: tuple[int, ...]  # local header, data descriptor (if any), central directory


def _records(fd: int, file: Path) -> list[_Record]:
    """The storage records of a torch zip, by storage number, read from its headers only."""
    with zipfile.ZipFile(file) as z:
        infos = {int(m.group(1)): i for i in z.infolist() if (m := _STORAGE.search(i.filename))}
        start_dir, end = z.start_dir, file.stat().st_size
    central: dict[str, int] = {}
    directory = os.pread(fd, end - start_dir, start_dir)
    pos = 0
    while directory[pos : pos + 4] == b"PK\x01\x02":
        n_len, e_len, c_len = struct.unpack_from("<HHH", directory, pos + 28)
        central[directory[pos + 46 : pos + 46 + n_len].decode()] = start_dir + pos + 16
        pos += 46 + n_len + e_len + c_len
    out = []
    for n in range(len(infos)):
        info = infos[n]
        header = os.pread(fd, 30, info.header_offset)
        (flags,) = struct.unpack_from("<H", header, 6)
        name_len, extra_len = struct.unpack_from("<HH", header, 26)
        data = info.header_offset + 30 + name_len + extra_len
        fields = [info.header_offset + 14]
        if flags & 0x08:  # a data descriptor follows the data: [signature] crc sizes
            after = data + info.file_size
            fields.append(after + 4 if os.pread(fd, 4, after) == b"PK\x07\x08" else after)
        fields.append(central[info.filename])
        out.append(_Record(info.filename, info.file_size, data, tuple(fields)))
    return out


class _RankFile:
    """A rank file saved by torch.save under ``skip_data``, its storages filled in place."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR)
        try:
            self.records = _records(self.fd, path)
        except BaseException:
            os.close(self.fd)
            raise
        self._filled = 0

    def fill(self, rows: Rows, writer: Writer, *, checksum: bool) -> None:
        """Write the next storage (torch numbers storages in pickling order) and its CRC-32.

        The zip stays valid: the CRC is patched in the record's local header, data descriptor and
        central directory entry (``checksum=False`` leaves zeros, as torch.save does when asked).
        """
        record = self.records[self._filled]
        if rows.nbytes != record.size:
            raise ShardMismatchError(
                f"storage {self._filled} holds {record.size} bytes, the tensor {rows.nbytes}", path=self.path
            )
        written, crc = writer.write(self.fd, record.data, rows, checksum=checksum)
        if written != record.size:
            raise ShardMismatchError(f"wrote {written} bytes into a {record.size}-byte storage", path=self.path)
        if checksum:
            packed = struct.pack("<I", crc)
            for at in record.crc_fields:
                os.pwrite(self.fd, packed, at)
        self._filled += 1

    def finish(self) -> None:
        if self._filled != len(self.records):
            raise ShardMismatchError(f"{self._filled} of {len(self.records)} storages written", path=self.path)

    def close(self) -> None:
        os.close(self.fd)


def write_megatron(
    src: Source,
    dst: Path,
    layout: Layout,
    *,
    iteration: int | None = None,
    make_vocab_size_divisible_by: int | None = None,
    overwrite: bool = False,
    fsync: bool = True,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write ``src`` at ``dst`` as a Megatron checkpoint split as ``layout``; returns the args written."""
    src.finish()  # plans from stored dtypes only: a source still being read is waited for
    arch = src.arch
    if layout.ep > 1 and not arch.num_experts:
        raise UnsupportedModelError("EP>1 for a model without experts", key="expert_model_parallel_size")
    check_layout(arch, layout)
    if make_vocab_size_divisible_by is not None:
        arch = dataclasses.replace(arch, make_vocab_size_divisible_by=make_vocab_size_divisible_by)
    args = arch.to_args(layout)
    padded = args["padded_vocab_size"]
    n_local = arch.num_experts // layout.ep if arch.num_experts else 0
    iter_name = "release" if iteration is None else f"iter_{iteration:07d}"
    if iteration is not None:
        args["iteration"] = iteration
    checksum = torch.serialization.get_crc32_options()  # as torch.save would
    writer = Writer()
    with atomic_dir(dst, overwrite=overwrite, fsync=fsync) as tmp:
        try:
            for pp in range(layout.pp):
                keys = _stage_keys(arch, layout, pp)
                for ep in range(layout.ep):
                    mine = []
                    for key, local in keys:
                        _, _, expert = rule_for(key)
                        if expert is not None:
                            if expert // n_local != ep:
                                continue
                            local = local.replace(f"local_experts.{expert}.", f"local_experts.{expert - ep * n_local}.")
                        mine.append((key, local))
                    # every TP rank of the stage at once, so each source tensor is read once, in order
                    ranks: list[_RankFile] = []
                    try:
                        for tp in range(layout.tp):
                            rank_dir = tmp / iter_name / rank_dir_name(tp, pp, ep, layout)
                            ranks.append(_skeleton(src, layout, mine, rank_dir, tp, pp, iteration, args))
                        for key, full in _read_ahead(src, [key for key, _ in mine], padded):
                            rule, _, _ = rule_for(key)
                            parts = [split_tp(rule, arch, full, tp=layout.tp, rank=tp) for tp in range(layout.tp)]
                            writer.run(
                                [
                                    functools.partial(rank.fill, part, writer, checksum=checksum)
                                    for rank, part in zip(ranks, parts, strict=True)
                                ]
                            )
                            src.release(full)
                            if progress:
                                progress(sum(part.nbytes for part in parts))
                        for rank in ranks:
                            rank.finish()
                    finally:
                        for rank in ranks:
                            rank.close()
        finally:
            writer.close()
        (tmp / iter_name / "arguments.json").write_text(json.dumps(args, indent=2, sort_keys=True) + "\n")
        (tmp / TRACKER).write_text(("release" if iteration is None else str(iteration)) + "\n")
    return args


def _read_ahead(src: Source, keys: list[str], padded: int) -> Iterator[tuple[str, Rows]]:
    """Each parameter in turn, the next one's source pages already asked for (``Source.prefetch``)."""
    ahead: tuple[str, Rows] | None = None
    for key in [*keys, None]:
        nxt = None
        if key is not None:
            nxt = (key, stored_for_split(src.get(key), padded, key))
            src.prefetch(nxt[1])
        if ahead is not None:
            yield ahead
        ahead = nxt


def stored_for_split(full: Rows, padded: int, key: str) -> Rows:
    """The tensor as a checkpoint stores it before splitting: vocabulary rows padded for the new TP."""
    return _pad_vocab(full, padded, key) if rule_for(key)[0].split is Split.VOCAB else full


def _skeleton(
    src: Source,
    layout: Layout,
    mine: list[tuple[str, str]],
    rank_dir: Path,
    tp: int,
    pp: int,
    iteration: int | None,
    args: dict[str, Any],
) -> _RankFile:
    """Save one rank's file without tensor bytes (torch's own zip records, sized), open to fill."""
    skeleton: dict[str, torch.Tensor | None] = {}
    for key, local in mine:
        rule, _, _ = rule_for(key)
        full = stored_for_split(src.get(key, meta=True), args["padded_vocab_size"], key)
        skeleton[local] = _placeholder(split_tp(rule, src.arch, full, tp=layout.tp, rank=tp))
    for key in extra_state_keys([local for _, local in mine], last_stage=pp == layout.pp - 1):
        skeleton[key] = None  # what megatron-core's linear modules save as their extra state
    state = {
        "model": skeleton,
        "iteration": 0 if iteration is None else iteration,
        "checkpoint_version": CHECKPOINT_VERSION,
        "args": args,
    }
    rank_dir.mkdir(parents=True)
    with torch.serialization.skip_data():
        torch.save(state, rank_dir / RANK_FILE)
    return _RankFile(rank_dir / RANK_FILE)


def _pad_vocab(full: Rows, padded: int, key: str) -> Rows:
    if full.rows > padded:
        raise LayoutError(f"{full.rows} vocabulary rows exceed the padded size {padded}", key=key)
    if full.rows == padded:
        return full
    return Rows.cat([full, Rows.zeros(padded - full.rows, full)])
