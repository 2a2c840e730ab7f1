"""Write canonical parameters as a Megatron ``torch``-format checkpoint at any valid layout.

Naming is megatron-core's local spec; every rank file holds ``model``, ``iteration``,
``checkpoint_version`` and ``args`` (a plain dict). Vocabulary rows are padded for the new TP
with zero rows: ``padded = ceil(V / (make_vocab_size_divisible_by * TP)) * that`` (Megatron's
rule); merging strips them again, so the padding never reaches a Hugging Face checkpoint.
"""

from __future__ import annotations

import json
import re
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Final

import torch

from ._fs import atomic_dir
from .arch import Arch, Layout
from .errors import LayoutError, ShardMismatchError, UnsupportedModelError
from .hf import Source
from .layout import RANK_FILE, TRACKER, rank_dir_name
from .rows import Rows
from .spec import Scope, Split, canonical_keys, format_key, rule_for
from .tp import split_tp

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
    if not (g % t == 0 or (t % g == 0 and arch.heads_per_group % (t // g) == 0)):
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


def fill_storages(file: Path, parts: Iterable[Rows]) -> None:
    """Write the bytes of storages 0, 1, ... of a torch zip saved under ``skip_data``, with their CRC-32.

    torch.save numbers storages in pickling order, which is the order of ``parts``. The zip stays
    valid: each record's CRC is patched in its local header, data descriptor and central directory.
    """
    with zipfile.ZipFile(file) as z:
        infos = {int(m.group(1)): i for i in z.infolist() if (m := _STORAGE.search(i.filename))}
        start_dir = z.start_dir
    crcs: dict[str, int] = {}
    with file.open("r+b") as f:
        for n, rows in enumerate(parts):
            info = infos[n]
            if rows.nbytes != info.file_size:
                raise ShardMismatchError(
                    f"storage {n} holds {info.file_size} bytes, the tensor {rows.nbytes}", path=file
                )
            f.seek(info.header_offset)
            header = f.read(30)
            flags = struct.unpack("<H", header[6:8])[0]
            name_len, extra_len = struct.unpack("<HH", header[26:30])
            f.seek(info.header_offset + 30 + name_len + extra_len)
            crc = 0
            for chunk in rows.byte_chunks():
                f.write(chunk)
                crc = zlib.crc32(chunk, crc)
            if flags & 0x08:  # a data descriptor follows the data: [signature] crc sizes
                at = f.tell()
                sig = f.read(4)
                f.seek(at + 4 if sig == b"PK\x07\x08" else at)
                f.write(struct.pack("<I", crc))
            f.seek(info.header_offset + 14)
            f.write(struct.pack("<I", crc))
            crcs[info.filename] = crc
        pos = start_dir
        while True:
            f.seek(pos)
            entry = f.read(46)
            if len(entry) < 46 or entry[:4] != b"PK\x01\x02":
                break
            n_len, e_len, c_len = struct.unpack("<HHH", entry[28:34])
            name = f.read(n_len).decode()
            if name in crcs:
                f.seek(pos + 16)
                f.write(struct.pack("<I", crcs[name]))
            pos += 46 + n_len + e_len + c_len


def write_megatron(
    src: Source,
    dst: Path,
    layout: Layout,
    *,
    iteration: int | None = None,
    overwrite: bool = False,
    fsync: bool = True,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write ``src`` at ``dst`` as a Megatron checkpoint split as ``layout``; returns the args written."""
    arch = src.arch
    if layout.ep > 1 and not arch.num_experts:
        raise UnsupportedModelError("EP>1 for a model without experts", key="expert_model_parallel_size")
    check_layout(arch, layout)
    args = arch.to_args(layout)
    padded = args["padded_vocab_size"]
    n_local = arch.num_experts // layout.ep if arch.num_experts else 0
    iter_name = "release" if iteration is None else f"iter_{iteration:07d}"
    if iteration is not None:
        args["iteration"] = iteration
    with atomic_dir(dst, overwrite=overwrite, fsync=fsync) as tmp:
        for pp in range(layout.pp):
            keys = _stage_keys(arch, layout, pp)
            for ep in range(layout.ep):
                for tp in range(layout.tp):
                    mine = []
                    for key, local in keys:
                        _, _, expert = rule_for(key)
                        if expert is not None:
                            if expert // n_local != ep:
                                continue
                            local = local.replace(f"local_experts.{expert}.", f"local_experts.{expert - ep * n_local}.")
                        mine.append((key, local))

                    def part(key: str, *, meta: bool, tp: int = tp) -> tuple[Rows, Rows]:
                        rule, _, _ = rule_for(key)
                        full = src.get(key, meta=meta)
                        if rule.split is Split.VOCAB:
                            full = _pad_vocab(full, padded, key)
                        return full, split_tp(rule, arch, full, tp=layout.tp, rank=tp)

                    rank_dir = tmp / iter_name / rank_dir_name(tp, pp, ep, layout)
                    rank_dir.mkdir(parents=True)
                    # the file's structure first (no tensor bytes), then each tensor's bytes streamed into place
                    skeleton = {local: _placeholder(part(key, meta=True)[1]) for key, local in mine}
                    state = {
                        "model": skeleton,
                        "iteration": 0 if iteration is None else iteration,
                        "checkpoint_version": CHECKPOINT_VERSION,
                        "args": args,
                    }
                    with torch.serialization.skip_data():
                        torch.save(state, rank_dir / RANK_FILE)
                    del skeleton, state

                    def parts(mine: list[tuple[str, str]] = mine, part: Any = part) -> Iterator[Rows]:
                        for key, _ in mine:
                            full, rows = part(key, meta=False)
                            yield rows
                            src.release(full)
                            if progress:
                                progress(rows.nbytes)

                    fill_storages(rank_dir / RANK_FILE, parts())
        (tmp / iter_name / "arguments.json").write_text(json.dumps(args, indent=2, sort_keys=True) + "\n")
        (tmp / TRACKER).write_text(("release" if iteration is None else str(iteration)) + "\n")
    return args


def _pad_vocab(full: Rows, padded: int, key: str) -> Rows:
    if full.rows > padded:
        raise LayoutError(f"{full.rows} vocabulary rows exceed the padded size {padded}", key=key)
    if full.rows == padded:
        return full
    return Rows.cat([full, Rows.zeros(padded - full.rows, full)])
