#!/usr/bin/env python
"""Speed and memory benchmark of the reference converter: ``merge`` and ``reshard`` against the floor.

Builds a synthetic ~1.2B-parameter Megatron checkpoint in the ``torch`` format, as Megatron writes
it (megatron-core local naming, 24 layers, hidden 2048, GQA, SwiGLU, TP=4, PP=2, bf16 weights and
fp32 Adam state plus fp32 master weights under ``optimizer``), then times:

* ``merge`` (Megatron -> one Hugging Face safetensors file) against its floor: copying exactly
  the weight bytes out of the rank files into one new file, with the same durability (fsync or not);
* ``reshard`` (that Hugging Face directory -> Megatron TP=4 PP=2) against its floor: copying the
  safetensors data bytes into TP*PP new files.

Each measurement runs in a fresh subprocess, so peak RSS (VmHWM / ru_maxrss) and the bytes read
(``/proc/self/io``: ``read_bytes`` from storage, ``rchar`` through read calls) are its own. "Cold"
runs evict the source files from the page cache first (``posix_fadvise(DONTNEED)``, checked with
``mincore``), so ``read_bytes`` shows what was really read: the weights, never the optimizer state.

Targets (from the issue): wall time <= 1.3x the floor; peak RSS <= 1 GB; optimizer bytes never read.

Usage::

    python benchmarks/merge.py [--workdir DIR] [--keep] [--small] [--repeat N] [--profile] [--strict]

``--small`` (4 layers, hidden 512; cold+fsync and warm+no-fsync only) is a smoke test of well under a
minute; the full run takes about 10 minutes at ``--repeat 2`` on 2 cores, plus ~1 minute to build the
17 GB checkpoint once. The checkpoint is cached in the work directory (``ckpt-*``; reruns skip building,
``--rebuild`` forces it); outputs are removed after each run unless ``--keep``. Each table row keeps
the best of ``--repeat`` runs of the operation and of the floor (run alternately), and also shows the
ratio of their medians; every run is in ``results-<model>.json`` in the work directory.

Noise: on a virtual machine whose host backs guest memory lazily, a write into page-cache pages
the guest never touched before runs at the first-touch rate printed at the start (about 1.2 GB/s
on the 2-core machine this was developed on), and a run that reuses recently freed pages goes 2-4x
faster; the same copy varied from 1.3 s to 5.6 s there. The floor and the operation alternate and
each row keeps the best of ``--repeat`` runs; use ``--repeat 3`` or more before reading a ratio.

The rank files' ``rng_state`` holds numpy RNG state as Megatron's does (``np_rng_state``); the
reference loader reads it through inert stand-ins.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import errno
import json
import math
import mmap
import os
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy

MB = 1e6
RSS_TARGET_MB = 1000.0
RATIO_TARGET = 1.3
COPY_CHUNK = 16 * 1024 * 1024
# Bytes per copy_file_range and, where the kernel cannot copy, per write() of the floor: the
# fastest sizes measured here (see copy_ranges).
FLOOR_WRITE_BYTES = 256 * 1024
FLOOR_COPY_BYTES = 1 << 20
ALL_CONDITIONS = (("cold", True), ("cold", False), ("warm", True), ("warm", False))  # page cache, fsync
SMOKE_CONDITIONS = (("cold", True), ("warm", False))


# -- the synthetic model ------------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    name: str
    num_layers: int
    hidden: int
    ffn: int
    heads: int
    groups: int
    kv_channels: int
    vocab: int
    tp: int
    pp: int
    divisible_by: int = 128
    seq_length: int = 4096
    iteration: int = 1000

    @property
    def padded_vocab(self) -> int:
        multiple = self.divisible_by * self.tp
        return math.ceil(self.vocab / multiple) * multiple

    @property
    def qkv_rows(self) -> int:
        return (self.heads + 2 * self.groups) * self.kv_channels

    def params(self) -> int:
        h = self.hidden
        per_layer = 2 * h + self.qkv_rows * h + h * self.heads * self.kv_channels + 3 * self.ffn * h
        return self.num_layers * per_layer + 2 * self.padded_vocab * h + h

    def stage(self, pp: int, tp: int) -> list[tuple[str, tuple[int, ...], bool]]:
        """(local key, per-rank shape, replicated over TP) of one rank, in megatron-core's order."""
        t, h = self.tp, self.hidden
        out: list[tuple[str, tuple[int, ...], bool]] = []
        if pp == 0:
            out.append(("embedding.word_embeddings.weight", (self.padded_vocab // t, h), False))
        for layer in range(self.num_layers // self.pp):
            p = f"decoder.layers.{layer}."
            out += [
                (p + "input_layernorm.weight", (h,), True),
                (p + "self_attention.linear_qkv.weight", (self.qkv_rows // t, h), False),
                (p + "self_attention.linear_proj.weight", (h, self.heads * self.kv_channels // t), False),
                (p + "pre_mlp_layernorm.weight", (h,), True),
                (p + "mlp.linear_fc1.weight", (2 * self.ffn // t, h), False),
                (p + "mlp.linear_fc2.weight", (h, self.ffn // t), False),
            ]
        if pp == self.pp - 1:
            out.append(("decoder.final_layernorm.weight", (h,), True))
            out.append(("output_layer.weight", (self.padded_vocab // t, h), False))
        return out


MODELS = {
    # ~1.21B parameters: Llama-style, 16 heads in 4 query groups of 128 channels
    "full": Model(
        "full", num_layers=24, hidden=2048, ffn=5632, heads=16, groups=4, kv_channels=128, vocab=32000, tp=4, pp=2
    ),
    "small": Model(
        "small", num_layers=4, hidden=512, ffn=1408, heads=8, groups=4, kv_channels=64, vocab=32000, tp=4, pp=2
    ),
}


def megatron_args(m: Model) -> argparse.Namespace:
    """The ``args`` Megatron pickles into every rank file (a representative subset, Megatron's names)."""
    import torch

    return argparse.Namespace(
        num_layers=m.num_layers,
        hidden_size=m.hidden,
        ffn_hidden_size=m.ffn,
        num_attention_heads=m.heads,
        group_query_attention=True,
        num_query_groups=m.groups,
        kv_channels=m.kv_channels,
        normalization="RMSNorm",
        norm_epsilon=1e-5,
        swiglu=True,
        squared_relu=False,
        openai_gelu=False,
        bias_gelu_fusion=False,
        bias_swiglu_fusion=True,
        position_embedding_type="rope",
        rotary_base=10000,
        rotary_percent=1.0,
        rotary_interleaved=False,
        use_rotary_position_embeddings=True,
        max_position_embeddings=m.seq_length,
        seq_length=m.seq_length,
        untie_embeddings_and_output_weights=True,
        add_bias_linear=False,
        add_qkv_bias=False,
        qk_layernorm=False,
        apply_query_key_layer_scaling=False,
        attention_dropout=0.0,
        hidden_dropout=0.0,
        init_method_std=0.02,
        vocab_size=None,
        make_vocab_size_divisible_by=m.divisible_by,
        padded_vocab_size=m.padded_vocab,
        tokenizer_type="HuggingFaceTokenizer",
        tokenizer_model="/data/tokenizer",
        tensor_model_parallel_size=m.tp,
        pipeline_model_parallel_size=m.pp,
        virtual_pipeline_model_parallel_size=None,
        expert_model_parallel_size=1,
        num_experts=None,
        sequence_parallel=True,
        context_parallel_size=1,
        data_parallel_size=8,
        world_size=m.tp * m.pp * 8,
        transformer_impl="local",
        use_mcore_models=True,
        use_legacy_models=False,
        spec=None,
        bf16=True,
        fp16=False,
        params_dtype=torch.bfloat16,
        accumulate_allreduce_grads_in_fp32=True,
        optimizer="adam",
        adam_beta1=0.9,
        adam_beta2=0.95,
        adam_eps=1e-8,
        lr=3e-4,
        min_lr=3e-5,
        weight_decay=0.1,
        clip_grad=1.0,
        lr_decay_style="cosine",
        lr_warmup_iters=100,
        use_distributed_optimizer=False,
        micro_batch_size=1,
        global_batch_size=256,
        train_iters=10000,
        iteration=m.iteration,
        consumed_train_samples=m.iteration * 256,
        save_interval=1000,
        save="/checkpoints/run",
        load="/checkpoints/run",
        ckpt_format="torch",
        no_save_optim=None,
        no_save_rng=None,
        seed=1234,
        rank=0,
        local_rank=0,
    )


def _seed(*parts: object) -> int:
    return zlib.crc32(repr(parts).encode())


def build_checkpoint(m: Model, root: Path, *, opt_states: int = 3, std: float = 1.0) -> None:
    """Write the synthetic checkpoint at ``root`` (built aside, renamed into place when complete).

    ``std`` scales the matrices (norm weights stay standard normal): a forward through the model
    (benchmarks/suite.py's parity) needs trained-like scales, the merge benchmark only bytes."""
    import torch

    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    it_dir = partial / f"iter_{m.iteration:07d}"
    args = megatron_args(m)
    t0 = time.perf_counter()
    for pp in range(m.pp):
        buffers: dict[str, list[torch.Tensor]] = {}  # fp32 state reused over TP ranks (same shapes)
        for tp in range(m.tp):
            model: dict[str, torch.Tensor] = {}
            for key, shape, replicated in m.stage(pp, tp):
                g = torch.Generator().manual_seed(_seed(m.name, key, pp, None if replicated else tp))
                model[key] = torch.randn(shape, generator=g, dtype=torch.bfloat16)
                if std != 1.0 and len(shape) > 1:
                    model[key].mul_(std)
            # Megatron's param groups: weight-decayed matrices, then the (1-D) norms without decay
            groups = [[k for k in model if model[k].dim() > 1], [k for k in model if model[k].dim() == 1]]
            masters: list[list[torch.Tensor]] = []
            state: dict[int, dict[str, torch.Tensor]] = {}
            param_groups = []
            index = 0
            for gi, names in enumerate(groups):
                masters.append([])
                ids = []
                for key in names:
                    w = model[key]
                    if key not in buffers:
                        buffers[key] = [torch.empty(w.shape, dtype=torch.float32) for _ in range(opt_states)]
                    bufs = buffers[key]
                    bufs[0].copy_(w)  # fp32 master copy of the bf16 weight
                    moments = bufs[1:] if opt_states == 3 else bufs
                    torch.mul(bufs[0], 1e-3, out=moments[0])
                    if len(moments) > 1:
                        moments[1].fill_(1e-8 * (index + 1))
                    state[index] = {"exp_avg": moments[0]}
                    if len(moments) > 1:
                        state[index]["exp_avg_sq"] = moments[1]
                    if opt_states == 3:
                        masters[-1].append(bufs[0])
                    ids.append(index)
                    index += 1
                param_groups.append(
                    {
                        "lr": 3e-4,
                        "betas": (0.9, 0.95),
                        "eps": 1e-8,
                        "weight_decay": 0.1 if gi == 0 else 0.0,
                        "bias_correction": True,
                        "step": m.iteration,
                        "wd_mult": 1.0 if gi == 0 else 0.0,
                        "lr_mult": 1.0,
                        "is_expert_parallel": False,
                        "is_decoupled_lr": False,
                        "params": ids,
                    }
                )
            optimizer: dict[str, Any] = {"optimizer": {"state": state, "param_groups": param_groups}}
            if opt_states == 3:
                optimizer["fp32_from_fp16_params"] = masters
            rank_dir = it_dir / f"mp_rank_{tp:02d}_{pp:03d}"
            rank_dir.mkdir(parents=True)
            g = torch.Generator().manual_seed(_seed("rng", tp, pp))
            ckpt = {
                "args": args,
                "checkpoint_version": 3.0,
                "iteration": m.iteration,
                "model": model,
                "optimizer": optimizer,
                "opt_param_scheduler": {
                    "max_lr": 3e-4,
                    "min_lr": 3e-5,
                    "num_steps": m.iteration * 256,
                    "warmup_steps": 100 * 256,
                    "decay_style": "cosine",
                },
                "rng_state": [
                    {
                        "random_rng_state": (3, tuple(range(625)), None),
                        "np_rng_state": numpy.random.RandomState(0).get_state(),
                        "torch_rng_state": g.get_state(),
                        "rng_tracker_states": {},
                    }
                ],
                "num_floating_point_operations_so_far": 0,
            }
            file = rank_dir / "model_optim_rng.pt"
            torch.save(ckpt, file)
            fd = os.open(file, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
            del model, optimizer, ckpt, state, masters
            print(
                f"  built {file.relative_to(partial)} ({file.stat().st_size / MB:,.0f} MB, "
                f"{time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    (partial / "latest_checkpointed_iteration.txt").write_text(f"{m.iteration}")
    shutil.rmtree(root, ignore_errors=True)
    partial.rename(root)


# -- where the bytes are ------------------------------------------------------------------------


def _zip_records(path: Path) -> dict[int, int]:
    """Data start offset -> size of every stored record of a torch zip file."""
    out = {}
    with zipfile.ZipFile(path) as z, path.open("rb") as f:
        for info in z.infolist():
            f.seek(info.header_offset)
            head = f.read(30)
            name_len, extra_len = struct.unpack("<HH", head[26:30])
            if info.compress_type != zipfile.ZIP_STORED:
                raise RuntimeError(f"{path}: {info.filename} is compressed")
            out[info.header_offset + 30 + name_len + extra_len] = info.file_size
    return out


def _mapping_base(path: Path) -> int:
    target = str(path.resolve())
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5] == target and int(parts[2], 16) == 0:
            return int(parts[0].split("-")[0], 16)
    raise RuntimeError(f"{path} is not mapped")


def _tensors(obj: Any) -> list[Any]:
    import torch

    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _tensors(v)]
    return []


def rank_file_manifest(path: Path) -> dict[str, Any]:
    """Byte ranges of the ``model`` tensors in a rank file, and the bytes of everything else.

    Offsets come from the storages' addresses in torch's own mmap of the file, and are checked
    against the zip's record table (every storage is one uncompressed ``archive/data/N`` record).
    """
    import torch

    with torch.serialization.safe_globals([argparse.Namespace]):
        obj = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    base = _mapping_base(path)
    records = _zip_records(path)

    def ranges(tensors: list[Any]) -> dict[int, int]:
        out = {}
        for t in tensors:
            s = t.untyped_storage()
            off = s.data_ptr() - base
            if records.get(off) != s.nbytes():
                raise RuntimeError(f"{path}: storage at {off} ({s.nbytes()} B) is not a zip record")
            out[off] = s.nbytes()
        return out

    weights = ranges(_tensors(obj["model"]))
    optim = ranges(_tensors(obj["optimizer"]))
    other = {k: v for k, v in records.items() if k not in weights and k not in optim}
    del obj
    return {
        "path": str(path),
        "size": path.stat().st_size,
        "weights": sorted(weights.items()),
        "weight_bytes": sum(weights.values()),
        "optimizer_bytes": sum(optim.values()),
        "other_bytes": sum(other.values()),
    }


def safetensors_ranges(path: Path) -> list[tuple[int, int]]:
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return sorted((8 + n + v["data_offsets"][0], v["data_offsets"][1] - v["data_offsets"][0]) for v in header.values())


# -- page cache ---------------------------------------------------------------------------------


def evict(paths: list[Path]) -> None:
    """Drop the files' pages from the page cache (no root needed; clean pages only)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if sys.platform.startswith("linux") else None


def _residency(path: Path) -> bytes | None:
    """One byte per page of ``path``: nonzero where the page is in the page cache (mincore)."""
    if _LIBC is None:
        return None
    size = path.stat().st_size
    if not size:
        return b""
    with path.open("rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    try:
        buf = ctypes.c_char.from_buffer(mm)
        vec = (ctypes.c_ubyte * ((size + mmap.PAGESIZE - 1) // mmap.PAGESIZE))()
        ok = _LIBC.mincore(ctypes.c_void_p(ctypes.addressof(buf)), ctypes.c_size_t(size), vec) == 0
        del buf
    finally:
        mm.close()
    return bytes(vec) if ok else None


def resident_bytes(paths: list[Path]) -> int | None:
    """Bytes of the files now in the page cache."""
    total = 0
    for p in paths:
        vec = _residency(p)
        if vec is None:
            return None
        total += (len(vec) - vec.count(0)) * mmap.PAGESIZE
    return total


SPILL = 64 * 2**20  # kernel readahead past the last weight page: at most a few windows


def resident_regions(manifest: list[dict[str, Any]]) -> dict[str, float] | None:
    """Resident MB of the rank files after a cold run, by region: the weight records; the first
    64 MiB after them (readahead spill); everything else (the optimizer state, record headers)."""
    page = mmap.PAGESIZE
    out = {"weights_mb": 0.0, "spill_mb": 0.0, "elsewhere_mb": 0.0}
    for f in manifest:
        vec = _residency(Path(f["path"]))
        if vec is None:
            return None
        total = len(vec) - vec.count(0)
        in_weights = done = 0  # ranges are sorted; a page shared by two records counts once
        for off, n in f["weights"]:
            lo, hi = max(off // page, done), (off + n + page - 1) // page
            if hi > lo:
                chunk = vec[lo:hi]
                in_weights += len(chunk) - chunk.count(0)
                done = hi
        end = max(off + n for off, n in f["weights"])
        lo, hi = (end + page - 1) // page, (end + SPILL + page - 1) // page
        spill = len(vec[lo:hi]) - vec[lo:hi].count(0)
        out["weights_mb"] += in_weights * page / MB
        out["spill_mb"] += spill * page / MB
        out["elsewhere_mb"] += (total - in_weights - spill) * page / MB
    return out


def warm(sources: list[tuple[str, list[tuple[int, int]]]]) -> None:
    """Read the given byte ranges so that they are in the page cache."""
    buf = memoryview(bytearray(COPY_CHUNK))
    for path, ranges in sources:
        fd = os.open(path, os.O_RDONLY)
        try:
            for off, n in ranges:
                while n:
                    got = os.preadv(fd, [buf[: min(n, COPY_CHUNK)]], off)
                    off, n = off + got, n - got
        finally:
            os.close(fd)


# -- one measurement, in a fresh process --------------------------------------------------------


def _proc_io() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/io").read_text().splitlines():
        k, v = line.split(":")
        out[k] = int(v)
    return out


def _status() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("Vm", "Rss")):
            k, v = line.split(":", 1)
            out[k] = int(v.split()[0]) * 1024
    return out


class _Sampler(threading.Thread):
    """Peak anonymous and file-backed RSS, sampled every 20 ms (VmHWM gives only their sum)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.peak = {"RssAnon": 0, "RssFile": 0}

    def run(self) -> None:
        while not self.stop.wait(0.02):
            s = _status()
            for k in self.peak:
                self.peak[k] = max(self.peak[k], s.get(k, 0))


def _floor_copy(src: int, data: memoryview, off: int, n: int, out: int, at: int, copying: bool) -> bool:
    """Bytes ``off:off+n`` of ``src`` (mapped as ``data``) to ``out`` at ``at``: copy_file_range
    while ``copying``, else (and for whatever it left) 256 KB writes. Returns whether copying works."""
    done = 0
    while copying and done < n:
        try:
            c = os.copy_file_range(src, out, min(n - done, FLOOR_COPY_BYTES), off + done, at + done)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            copying = False
            break
        if c <= 0:
            break
        done += c
    for start in range(off + done, off + n, FLOOR_WRITE_BYTES):
        view = data[start : min(start + FLOOR_WRITE_BYTES, off + n)]
        pos = at + start - off
        while view:
            w = os.pwrite(out, view, pos)
            view, pos = view[w:], pos + w
        del view
    return copying


def copy_ranges(sources: list[tuple[str, list[tuple[int, int]]]], outputs: list[tuple[str, int]], fsync: bool) -> None:
    """The floor: stream the byte ranges of ``sources`` into new files of the given sizes.

    The fastest plain copy measured here: ``copy_file_range`` in calls of ``FLOOR_COPY_BYTES``,
    page cache to page cache inside the kernel, nothing mapped into this process. From a warm
    page cache the 2.4 GB of weights took 1.18-1.43 s that way, against 1.24-1.6 s for mapping
    each source and handing its ranges to ``write`` in 256 KB calls (``FLOOR_WRITE_BYTES``: the
    kernel reads a write's source range once to fault it in and again to copy it, and 256 KB
    stays in the core's cache between the two; 2.3-2.5 s in 8 MB calls), and it was far less
    hurt by this VM's noisy periods (1.4 s where the other took 3-5 s). From a cold cache, with
    ``POSIX_FADV_SEQUENTIAL`` on the source (a larger readahead window), it took 3.3-3.8 s (4.1-8.1 s
    without the hint; the mapped writes took 4.6-7.0 s). Where the kernel or
    filesystem cannot copy (another OS, EXDEV...) the floor falls back to that mapped ``write``.
    The converters copy the same way where the bytes lie in a file as they are, and write the
    rest in the same 256 KB calls.
    """
    written: list[str] = []
    outs = iter(outputs)
    out_path, left = next(outs)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    out = open(out_path, "wb", buffering=0)  # noqa: SIM115 - closed below, one file after another
    written.append(out_path)
    at = 0  # offset in the current output
    copying = hasattr(os, "copy_file_range")
    for path, ranges in sources:
        with open(path, "rb") as f:
            if copying and hasattr(os, "posix_fadvise"):
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)  # as the converter does
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            data = memoryview(mm)
            try:
                for off, n in ranges:
                    while n:
                        if not left:
                            out.close()
                            out_path, left = next(outs)
                            out = open(out_path, "wb", buffering=0)  # noqa: SIM115
                            written.append(out_path)
                            at = 0
                        k = min(n, left)
                        copying = _floor_copy(f.fileno(), data, off, k, out.fileno(), at, copying)
                        off, n, left, at = off + k, n - k, left - k, at + k
            finally:
                data.release()
                mm.close()
    out.close()
    if fsync:  # like the converters: every file at the end, then the directory
        for p in written:
            fd = os.open(p, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        fd = os.open(Path(written[0]).parent, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)


def memory_probe(mb: int = 512) -> float:
    """MB/s at which fresh anonymous memory is first touched (a VM backing guest pages lazily, or
    returning freed ones to the host, makes this slow, and every new allocation pays it)."""
    size = mb * 2**20
    mm = mmap.mmap(-1, size)
    t = time.perf_counter()
    for off in range(0, size, mmap.PAGESIZE):
        mm[off] = 1
    dt = time.perf_counter() - t
    mm.close()
    return size / MB / dt


def reference_fingerprint() -> dict[str, Any]:
    """Which converter was measured: the commit, and a hash of reference/*.py as they are on disk."""
    import hashlib

    import vla_reference

    root = Path(vla_reference.__file__).parent
    h = hashlib.sha256()
    for p in sorted(root.glob("*.py")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    out: dict[str, Any] = {"reference_sha256": h.hexdigest()[:16]}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = ["git", "-C", str(root)]
        out["commit"] = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "."], capture_output=True, text=True).stdout
        out["reference_dirty"] = bool(dirty.strip())
    return out


def child_main(spec: dict[str, Any]) -> dict[str, Any]:
    op = spec["op"]
    if op in ("merge", "reshard"):
        import vla_reference  # imported before the clock starts, like any long-lived tool

        if op == "merge":

            def run() -> Any:
                return vla_reference.merge(
                    Path(spec["src"]), Path(spec["dst"]), vocab_size=spec["vocab_size"], fsync=spec["fsync"]
                )
        else:

            def run() -> Any:
                return vla_reference.reshard(
                    Path(spec["src"]), Path(spec["dst"]), tp=spec["tp"], pp=spec["pp"], fsync=spec["fsync"]
                )
    elif op == "copy":

        def run() -> Any:
            return copy_ranges(spec["sources"], spec["outputs"], spec["fsync"])
    else:
        raise SystemExit(f"unknown op {op}")
    profile = spec.get("profile")
    rss_before = _status().get("VmRSS", 0)
    sampler = _Sampler()
    sampler.start()
    io0, ru0 = _proc_io(), resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.runcall(run)
        prof.dump_stats(profile)
    else:
        run()
    wall = time.perf_counter() - t0
    io1, ru1 = _proc_io(), resource.getrusage(resource.RUSAGE_SELF)
    sampler.stop.set()
    sampler.join()
    st = _status()
    return {
        "wall_s": wall,
        "cpu_user_s": ru1.ru_utime - ru0.ru_utime,
        "cpu_sys_s": ru1.ru_stime - ru0.ru_stime,
        "rss_before_mb": rss_before / MB,
        "peak_rss_mb": st.get("VmHWM", 0) / MB,
        "ru_maxrss_mb": ru1.ru_maxrss * 1024 / MB,
        "peak_rss_anon_mb": sampler.peak["RssAnon"] / MB,
        "peak_rss_file_mb": sampler.peak["RssFile"] / MB,
        "read_bytes": io1["read_bytes"] - io0["read_bytes"],
        "rchar": io1["rchar"] - io0["rchar"],
        "write_bytes": io1["write_bytes"] - io0["write_bytes"],
        "wchar": io1["wchar"] - io0["wchar"],
        "major_faults": ru1.ru_majflt - ru0.ru_majflt,
    }


def measure(spec: dict[str, Any], log: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    with log.open("a") as f:
        f.write(f"$ {spec['op']} {json.dumps({k: v for k, v in spec.items() if k != 'sources'})}\n")
        f.write(proc.stderr)
    if proc.returncode:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"{spec['op']} failed (exit {proc.returncode}); see {log}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the benchmark ------------------------------------------------------------------------------


def _clean(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    for p in path.parent.glob(f".{path.name}.*"):  # an interrupted converter's temporary sibling
        shutil.rmtree(p, ignore_errors=True)
    os.sync()  # no writeback of an earlier run may overlap the next one


def _files(d: Path, pattern: str) -> list[Path]:
    return sorted(p for p in d.rglob(pattern) if p.is_file())


def run_pair(
    name: str,
    *,
    op_spec: dict[str, Any],
    floor_spec: dict[str, Any],
    src_files: list[Path],
    sources: list[tuple[str, list[tuple[int, int]]]],
    out: Path,
    repeat: int,
    log: Path,
    manifest: list[dict[str, Any]] | None = None,
    conditions: tuple[tuple[str, bool], ...] = ALL_CONDITIONS,
) -> list[dict[str, Any]]:
    """Cold and warm, fsync on and off: floor and operation alternately, ``repeat`` times each."""
    rows = []
    weight_bytes = sum(n for _, r in sources for _, n in r)
    for cache, fsync in conditions:
        runs: dict[str, list[dict[str, Any]]] = {"floor": [], name: []}
        for _ in range(repeat):
            for kind, spec in (("floor", floor_spec), (name, op_spec)):
                _clean(out)
                if cache == "cold":
                    evict(src_files)
                else:
                    warm(sources)
                resident = resident_bytes(src_files)
                r = measure({**spec, "fsync": fsync}, log)
                r["resident_before_mb"] = None if resident is None else resident / MB
                if manifest is not None and cache == "cold":
                    r["resident_after"] = resident_regions(manifest)
                runs[kind].append(r)
                print(
                    f"  {kind:8s} {cache} fsync={fsync!s:5s} {r['wall_s']:7.2f} s  "
                    f"peak RSS {r['peak_rss_mb']:7.1f} MB  read {r['read_bytes'] / MB:8.1f} MB  "
                    f"(resident before {r['resident_before_mb']:.0f} MB)",
                    flush=True,
                )
        best = min(runs[name], key=lambda r: r["wall_s"])
        floor = min(runs["floor"], key=lambda r: r["wall_s"])
        rows.append(
            {
                "operation": name,
                "cache": cache,
                "fsync": fsync,
                "wall_s": best["wall_s"],
                "floor_s": floor["wall_s"],
                "ratio": best["wall_s"] / floor["wall_s"],
                "wall_median_s": statistics.median(r["wall_s"] for r in runs[name]),
                "floor_median_s": statistics.median(r["wall_s"] for r in runs["floor"]),
                "peak_rss_mb": max(r["peak_rss_mb"] for r in runs[name]),
                "floor_peak_rss_mb": max(r["peak_rss_mb"] for r in runs["floor"]),
                "read_mb": max(r["read_bytes"] for r in runs[name]) / MB,
                "floor_read_mb": max(r["read_bytes"] for r in runs["floor"]) / MB,
                "weight_mb": weight_bytes / MB,
                "resident_after": runs[name][0].get("resident_after"),
                "floor_resident_after": runs["floor"][0].get("resident_after"),
                "runs": runs,
            }
        )
    _clean(out)
    return rows


def check_roundtrip(m: Model, original: Path, resharded: Path) -> str:
    """Every tensor of the resharded checkpoint equals the original (padded vocabulary rows aside)."""
    import torch

    it = f"iter_{m.iteration:07d}"

    def load(path: Path) -> dict[str, Any]:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", mmap=True, weights_only=True)["model"]

    bad = []
    n = 0
    for pp in range(m.pp):
        for tp in range(m.tp):
            rank = f"mp_rank_{tp:02d}_{pp:03d}/model_optim_rng.pt"
            a = load(original / it / rank)
            b = load(resharded / "release" / rank)  # reshard without an iteration writes release/
            if set(a) != set(b):
                bad.append(f"{rank}: keys differ ({sorted(set(a) ^ set(b))[:3]})")
                continue
            for key, ta in a.items():
                tb = b[key]
                if key in ("embedding.word_embeddings.weight", "output_layer.weight"):
                    keep = max(0, min(ta.shape[0], m.vocab - tp * ta.shape[0]))
                    ta, tb = ta[:keep], tb[:keep]
                n += 1
                if ta.shape != tb.shape or ta.dtype != tb.dtype or not torch.equal(ta, tb):
                    bad.append(f"{rank}:{key}")
            del a, b
    return f"ok ({n} tensors bit-exact)" if not bad else f"FAILED: {', '.join(bad[:5])}"


def profile_runs(m: Model, ckpt: Path, hf: Path, work: Path, log: Path) -> dict[str, Any]:
    """cProfile of one warm, fsync=False merge and reshard; the top functions by own time."""
    import pstats

    out = {}
    for name, spec in (
        ("merge", {"op": "merge", "src": str(ckpt), "dst": str(work / "runs" / "merge"), "vocab_size": m.vocab}),
        ("reshard", {"op": "reshard", "src": str(hf), "dst": str(work / "runs" / "reshard"), "tp": m.tp, "pp": m.pp}),
    ):
        _clean(Path(spec["dst"]))
        stats_file = work / f"profile-{m.name}-{name}.pstats"
        r = measure({**spec, "fsync": False, "profile": str(stats_file)}, log)
        text = work / f"profile-{m.name}-{name}.txt"
        with text.open("w") as f:
            st = pstats.Stats(str(stats_file), stream=f)
            st.sort_stats("tottime").print_stats(25)
            st.sort_stats("cumulative").print_stats(40)
        _clean(Path(spec["dst"]))
        out[name] = {"wall_s": r["wall_s"], "stats": str(stats_file), "text": str(text)}
        print(f"  profile of {name}: {r['wall_s']:.2f} s under cProfile -> {text}")
    return out


def print_table(rows: list[dict[str, Any]], optimizer_mb: float) -> None:
    """Best (minimum) wall times of the operation and of the floor, their ratio, and the ratio of medians."""
    head = (
        f"{'operation':9s} {'cache':5s} {'fsync':5s} {'wall s':>7s} {'floor s':>7s} {'ratio':>6s} {'(med)':>6s} "
        f"{'peak RSS MB':>11s} {'read MB':>8s} {'weights MB':>10s} {'optim MB':>9s}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        opt = f"{optimizer_mb:9.0f}" if r["operation"] == "merge" else f"{'-':>9s}"
        read = f"{r['read_mb']:8.0f}" if r["cache"] == "cold" else f"{'(warm)':>8s}"
        med = r["wall_median_s"] / r["floor_median_s"] if r.get("floor_median_s") else float("nan")
        print(
            f"{r['operation']:9s} {r['cache']:5s} {r['fsync']!s:5s} {r['wall_s']:7.2f} {r['floor_s']:7.2f} "
            f"{r['ratio']:6.2f} {med:6.2f} {r['peak_rss_mb']:11.0f} {read} {r['weight_mb']:10.0f} {opt}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "vla-bench")
    ap.add_argument("--keep", action="store_true", help="keep the merged and resharded outputs")
    ap.add_argument("--small", action="store_true", help="a 4-layer, hidden-512 model: a smoke test in < 1 min")
    ap.add_argument("--repeat", type=int, default=None, help="runs per measurement, best kept (default 2; 1 small)")
    ap.add_argument(
        "--opt-states",
        type=int,
        choices=(2, 3),
        default=3,
        help="fp32 optimizer tensors per parameter: master+exp_avg+exp_avg_sq (3) or the moments (2)",
    )
    ap.add_argument(
        "--all-conditions", action="store_true", help="with --small: all four cache/fsync conditions, not two"
    )
    ap.add_argument("--rebuild", action="store_true", help="rebuild the cached checkpoint")
    ap.add_argument("--profile", action="store_true", help="also cProfile one merge and one reshard")
    ap.add_argument("--only", choices=("merge", "reshard"), help="run one of the two")
    ap.add_argument("--build-only", action="store_true", help="build (or find) the checkpoint and stop")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child_main(json.loads(a.child))))
        return 0

    m = MODELS["small" if a.small else "full"]
    repeat = a.repeat or (1 if a.small else 2)
    conditions = SMOKE_CONDITIONS if a.small and not a.all_conditions else ALL_CONDITIONS
    work = a.workdir.absolute()
    work.mkdir(parents=True, exist_ok=True)
    log = work / f"log-{m.name}.txt"
    log.write_text("")
    tag = f"{m.name}-opt{a.opt_states}"
    ckpt = work / f"ckpt-{tag}"
    manifest_file = work / f"manifest-{tag}.json"
    print(
        f"model {m.name}: {m.params() / 1e9:.3f}B parameters, {m.num_layers} layers, hidden {m.hidden}, "
        f"ffn {m.ffn}, {m.heads} heads / {m.groups} groups, vocab {m.vocab} (padded {m.padded_vocab}), "
        f"TP={m.tp} PP={m.pp}, bf16 weights + {a.opt_states} fp32 optimizer tensors per parameter"
    )
    started = time.perf_counter()
    if a.rebuild or not (ckpt / "latest_checkpointed_iteration.txt").is_file() or not manifest_file.is_file():
        print(f"building {ckpt} ...", flush=True)
        t = time.perf_counter()
        build_checkpoint(m, ckpt, opt_states=a.opt_states)
        manifest = [rank_file_manifest(p) for p in _files(ckpt, "model_optim_rng.pt")]
        manifest_file.write_text(json.dumps({"model": asdict(m), "files": manifest}, indent=1))
        print(f"built in {time.perf_counter() - t:.0f} s")
    else:
        print(f"using the cached checkpoint {ckpt}")
    manifest = json.loads(manifest_file.read_text())["files"]
    rank_files = [Path(f["path"]) for f in manifest]
    weight_bytes = sum(f["weight_bytes"] for f in manifest)
    optimizer_bytes = sum(f["optimizer_bytes"] for f in manifest)
    file_bytes = sum(f["size"] for f in manifest)
    print(
        f"checkpoint: {len(rank_files)} rank files, {file_bytes / MB:,.0f} MB: weights {weight_bytes / MB:,.0f} MB, "
        f"optimizer {optimizer_bytes / MB:,.0f} MB, other {sum(f['other_bytes'] for f in manifest) / MB:,.1f} MB"
    )

    if a.build_only:
        return 0
    runs = work / "runs"
    hf = work / f"hf-{m.name}"
    resharded = work / f"resharded-{m.name}"
    rows: list[dict[str, Any]] = []
    results: dict[str, Any] = {
        "model": asdict(m),
        "params": m.params(),
        "opt_states": a.opt_states,
        "repeat": repeat,
        "checkpoint": str(ckpt),
        "checkpoint_bytes": file_bytes,
        "weight_bytes": weight_bytes,
        "optimizer_bytes": optimizer_bytes,
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "targets": {"ratio": RATIO_TARGET, "peak_rss_mb": RSS_TARGET_MB},
        **reference_fingerprint(),
        "first_touch_mb_s_before": memory_probe(),
    }
    print(
        f"converter: {results.get('commit', '?')} reference/*.py sha256 {results['reference_sha256']}"
        f"{' (uncommitted changes)' if results.get('reference_dirty') else ''}; fresh memory is first touched "
        f"at {results['first_touch_mb_s_before']:,.0f} MB/s here"
    )

    if a.only != "reshard":
        print("merge:", flush=True)
        sources = [(f["path"], [tuple(r) for r in f["weights"]]) for f in manifest]
        floor_out = [(str(runs / "merge" / "weights.bin"), weight_bytes)]
        rows += run_pair(
            "merge",
            op_spec={"op": "merge", "src": str(ckpt), "dst": str(runs / "merge"), "vocab_size": m.vocab},
            floor_spec={"op": "copy", "sources": sources, "outputs": floor_out},
            src_files=rank_files,
            sources=sources,
            out=runs / "merge",
            repeat=repeat,
            conditions=conditions,
            log=log,
            manifest=manifest,
        )
    if a.only != "merge" or a.profile:
        _clean(hf)  # one more merge, kept: the source of reshard
        measure({"op": "merge", "src": str(ckpt), "dst": str(hf), "vocab_size": m.vocab, "fsync": False}, log)
    if a.only != "merge":
        print("reshard:", flush=True)
        hf_files = _files(hf, "*.safetensors")
        sources = [(str(p), safetensors_ranges(p)) for p in hf_files]
        hf_bytes = sum(n for _, r in sources for _, n in r)
        n_out = m.tp * m.pp
        sizes = [hf_bytes // n_out + (1 if i < hf_bytes % n_out else 0) for i in range(n_out)]
        rows += run_pair(
            "reshard",
            op_spec={"op": "reshard", "src": str(hf), "dst": str(runs / "reshard"), "tp": m.tp, "pp": m.pp},
            floor_spec={
                "op": "copy",
                "sources": sources,
                "outputs": [(str(runs / "reshard" / f"rank{i}.bin"), s) for i, s in enumerate(sizes)],
            },
            src_files=hf_files,
            sources=sources,
            out=runs / "reshard",
            repeat=repeat,
            conditions=conditions,
            log=log,
        )
        _clean(resharded)
        measure({"op": "reshard", "src": str(hf), "dst": str(resharded), "tp": m.tp, "pp": m.pp, "fsync": False}, log)
        results["roundtrip"] = check_roundtrip(m, ckpt, resharded)
        print(f"round trip Megatron -> HF -> Megatron: {results['roundtrip']}")
    if a.profile:
        print("profiling:", flush=True)
        results["profile"] = profile_runs(m, ckpt, hf, work, log)
    if not a.keep:
        _clean(hf)
        _clean(resharded)
    with contextlib.suppress(OSError):
        runs.rmdir()

    results["rows"] = rows
    results["first_touch_mb_s_after"] = memory_probe()
    checks = {}
    for r in rows:
        key = f"{r['operation']}/{r['cache']}/fsync={r['fsync']}"
        checks[key] = {"ratio_ok": r["ratio"] <= RATIO_TARGET, "rss_ok": r["peak_rss_mb"] <= RSS_TARGET_MB}
        if r["operation"] == "merge" and r["cache"] == "cold" and r["resident_after"]:
            # the optimizer's pages, bar the readahead spill right after the weights, stay unread
            checks[key]["optimizer_unread"] = r["resident_after"]["elsewhere_mb"] * MB < 0.01 * optimizer_bytes
    results["checks"] = checks
    results["elapsed_s"] = time.perf_counter() - started
    out_json = work / f"results-{m.name}.json"
    out_json.write_text(json.dumps(results, indent=1, default=str) + "\n")

    print()
    print_table(rows, optimizer_bytes / MB)
    print()
    print(
        f"targets: wall <= {RATIO_TARGET}x floor; peak RSS <= {RSS_TARGET_MB:.0f} MB; cold merge reads the "
        f"weights ({weight_bytes / MB:,.0f} MB), not the optimizer state ({optimizer_bytes / MB:,.0f} MB)"
    )
    for r in rows:
        ra = r.get("resident_after")
        if r["operation"] == "merge" and r["cache"] == "cold" and ra:
            fr = r.get("floor_resident_after") or {}
            print(
                f"cold merge fsync={r['fsync']}: read {r['read_mb']:,.0f} MB = weights {ra['weights_mb']:,.0f} MB + "
                f"readahead past the weights {ra['spill_mb']:,.0f} MB + elsewhere {ra['elsewhere_mb']:,.1f} MB "
                f"(page cache after the run; the floor's spill: {fr.get('spill_mb', 0):,.0f} MB)"
            )
    failed = [f"{k}: {', '.join(n for n, ok in v.items() if not ok)}" for k, v in checks.items() if not all(v.values())]
    print("all targets met" if not failed else "missed: " + "; ".join(failed))
    print(f"results: {out_json} ({results['elapsed_s']:.0f} s in all)")
    return 1 if a.strict and failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
