#!/usr/bin/env python
"""The whole conformance suite at the size of a real release: time, CPU, memory and bytes per area.

Generates once (cached in the work directory) a ~1.2B-parameter release with ``vla-release pack``:
the TP=4 PP=2 bf16 training checkpoint with fp32 Adam state of ``benchmarks/merge.py`` (24 layers,
hidden 2048, GQA, SwiGLU; ~17 GB), a real 32k byte-level BPE tokenizer package trained here on
a seeded synthetic corpus, the reference processor, a card stating the real parameter count, the
config matrix, environment and launch script derived from the model, and the golden demos. Then
it measures, each in a fresh process tree:

* the floors: reading every byte of the release once (cold: its pages evicted first; warm), and
  one forward of the eval set on the merged model in transformers (the parity floor);
* the suite, one area at a time (``-m AREA``) and whole, with an empty artefact cache ("first
  run") and with the cache the first run left ("warm"): wall time, CPU time (user + system of the
  whole process tree), the peak RSS of any one process and of the tree, and the bytes the tree
  read (``/proc/PID/io``: ``rchar`` through read calls, ``read_bytes`` from storage);
* after a cold area run, how much of the release it brought into the page cache (``mincore``):
  the release bytes that area read at least once.

Usage::

    python benchmarks/suite.py [--workdir DIR] [--small] [--areas A,B] [--skip-whole] [--n-auto]
                               [--drop-inputs] [--out FILE]

``--small`` (4 layers, hidden 512) is a smoke test of a few minutes. Results are printed as a
table and written as JSON (``--out``, default ``WORKDIR/suite-<model>.json``). The numbers go into
docs/scale.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import merge as merge_bench  # noqa: E402 - the checkpoint builder, the page-cache helpers

AREAS = ("checkpoint", "parity", "tokenizer", "preprocessing", "card", "versioning", "manifest", "reproducibility")
MB = 1e6


# -- the release ----------------------------------------------------------------------------------


def _corpus(n_words: int, seed: int = 0) -> list[str]:
    """Seeded pseudo-words from syllables: enough distinct strings for a 32k BPE vocabulary."""
    rng = random.Random(seed)
    onsets = ["", "b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z", "st", "tr"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ou", "ea"]
    codas = ["", "n", "r", "s", "t", "l", "ck", "ng"]
    syll = [o + v + c for o in onsets for v in vowels for c in codas]
    lines, line = [], []
    for _ in range(n_words):
        line.append("".join(rng.choice(syll) for _ in range(rng.randint(1, 4))))
        if len(line) == 16:
            lines.append(" ".join(line))
            line = []
    return lines


def build_inputs(m: Any, work: Path) -> dict[str, Path]:
    """What a lab holds after training this model: pack's inputs."""
    from transformers import AutoTokenizer

    from vla_reference import open_source
    from vla_reference.golden import EXAMPLES
    from vla_reference.golden._assets import DOCKERFILE, config_matrix, environment_record, launch_script_text
    from vla_reference.golden._specs import GOLDEN
    from vla_reference.processor import reference_processor, write_processor_files
    from vla_reference.repro import ENVIRONMENT_FILES
    from vla_reference.tokenizer import VLA_TOKENS, build_tokenizer

    ckpt = work / f"ckpt-{m.name}"
    if not ckpt.is_dir():
        print(f"building the {m.params() / 1e9:.2f}B-parameter checkpoint at {ckpt}", file=sys.stderr)
        merge_bench.build_checkpoint(m, ckpt, std=0.02)
    inputs = work / f"inputs-{m.name}"
    if (inputs / "done").is_file():
        return {p.name: p for p in inputs.iterdir() if p.name != "done"} | {"checkpoint": ckpt}
    shutil.rmtree(inputs, ignore_errors=True)
    inputs.mkdir(parents=True)
    tok = build_tokenizer(inputs / "tokenizer", corpus=_corpus(400_000), base_vocab_size=m.vocab - len(VLA_TOKENS))
    print(f"tokenizer: {tok.get_vocab_size()} tokens", file=sys.stderr)
    processor = reference_processor(AutoTokenizer.from_pretrained(inputs / "tokenizer"), seed=3)
    (inputs / "processor").mkdir()
    write_processor_files(processor, inputs / "processor")
    src = open_source(ckpt, vocab_size=tok.get_vocab_size())
    arch, layout = src.arch, src.layout
    src.close()
    spec = dataclasses.replace(GOLDEN[0], name=f"VLA-Bench-{m.name}", model_type="Llama-style dense decoder")
    from vla_reference.golden._assets import card_text

    params = m.params() - 2 * (m.padded_vocab - tok.get_vocab_size()) * m.hidden
    (inputs / "README.md").write_text(card_text(spec, arch, "1.0.0", params))
    (inputs / "configs").mkdir()
    args = merge_bench.megatron_args(m)
    for fname, cfg in config_matrix(arch, layout, f"vla-bench-{m.name}.json").items():
        if fname == f"vla-bench-{m.name}.json":  # the run's own settings, as its args record them
            cfg = {**cfg, "global-batch-size": args.global_batch_size, "lr": args.lr, "min-lr": args.min_lr}
        (inputs / "configs" / fname).write_text(json.dumps({k: v for k, v in cfg.items() if v is not None}, indent=2))
    (inputs / "docker").mkdir()
    (inputs / "docker/Dockerfile").write_text(DOCKERFILE)
    (inputs / "docker" / ENVIRONMENT_FILES[0]).write_text(json.dumps(environment_record(), indent=2))
    (inputs / "scripts").mkdir()
    script = inputs / "scripts/run_pretrain.sh"
    script.write_text(launch_script_text(arch, layout, f"configs/vla-bench-{m.name}.json"))
    script.chmod(0o755)
    shutil.copytree(EXAMPLES, inputs / "examples")
    (inputs / "done").touch()
    return {p.name: p for p in inputs.iterdir() if p.name != "done"} | {"checkpoint": ckpt}


def build_release(m: Any, work: Path, *, drop_inputs: bool = False) -> tuple[Path, float]:
    """The packed release in ``work`` (built once); ``drop_inputs``: delete the training outputs
    it was packed from afterwards (the release holds its own copy; saves ~16 GB at full size)."""
    from vla_reference.release import pack

    out = work / f"release-{m.name}"
    if (out / "release.json").is_file():
        return out, 0.0
    given = build_inputs(m, work)
    t0 = time.perf_counter()
    pack(
        out,
        checkpoint=given["checkpoint"],
        tokenizer=given["tokenizer"],
        processor=given["processor"],
        card=given["README.md"],
        configs=given["configs"],
        docker=given["docker"],
        scripts=given["scripts"],
        examples=given["examples"],
        name=f"VLA-Bench-{m.name}",
        version="1.0.0",
        date="2026-11-01",
        fsync=False,
        log=lambda s: print(f"pack: {s}", file=sys.stderr),
    )
    took = time.perf_counter() - t0
    if drop_inputs:
        shutil.rmtree(given["checkpoint"], ignore_errors=True)
    return out, took


# -- measuring a process tree ---------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text().split()
            out += [int(c) for c in text]
    except OSError:
        return out  # the process exited while it was listed
    return out


def _read_status(pid: int) -> tuple[int, int]:
    """(VmRSS, RssAnon) in bytes: all resident pages, and those that are not a mapped file's (a
    mapped safetensors or rank file's pages count in VmRSS but are page cache, reclaimable)."""
    rss = anon = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("RssAnon:"):
                anon = int(line.split()[1]) * 1024
    except OSError:
        return rss, anon  # the process exited: nothing more to sample
    return rss, anon


def _read_io(pid: int) -> dict[str, int]:
    try:
        return {k: int(v) for k, v in (line.split(":") for line in Path(f"/proc/{pid}/io").read_text().splitlines())}
    except OSError:
        return {}


class TreeSampler(threading.Thread):
    """Samples a process tree every 0.1 s: peak RSS of one process and of the tree, and the
    last I/O counters of every process seen (a process's counters are final when it exits)."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root, self.stop = root, threading.Event()
        self.peak_one = self.peak_tree = self.peak_anon = self.peak_tree_anon = 0
        self.io: dict[int, dict[str, int]] = {}

    def run(self) -> None:
        while not self.stop.is_set():
            pids, todo = [], [self.root]
            while todo:
                p = todo.pop()
                pids.append(p)
                todo += _children(p)
            status = [_read_status(p) for p in pids]
            rss, anon = [r for r, _ in status], [a for _, a in status]
            self.peak_one = max(self.peak_one, *rss) if rss else self.peak_one
            self.peak_tree = max(self.peak_tree, sum(rss))
            self.peak_anon = max(self.peak_anon, *anon) if anon else self.peak_anon
            self.peak_tree_anon = max(self.peak_tree_anon, sum(anon))
            for p in pids:
                if io := _read_io(p):
                    self.io[p] = io
            self.stop.wait(0.1)


def measure(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    before = os.times()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    after = os.times()
    verdict = next((line for line in reversed(out.splitlines()) if "CONFORM" in line), out.strip()[-300:])
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(
            (after.children_user - before.children_user) + (after.children_system - before.children_system), 2
        ),
        "peak_rss_mb": round(sampler.peak_one / MB),
        "peak_tree_rss_mb": round(sampler.peak_tree / MB),
        "peak_anon_mb": round(sampler.peak_anon / MB),
        "peak_tree_anon_mb": round(sampler.peak_tree_anon / MB),
        "rchar_mb": round(sum(io.get("rchar", 0) for io in sampler.io.values()) / MB),
        "read_bytes_mb": round(sum(io.get("read_bytes", 0) for io in sampler.io.values()) / MB),
        "returncode": proc.returncode,
        "verdict": verdict,
    }


def release_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def read_floor(root: Path) -> float:
    """Seconds to read every byte of the release once (1 MiB reads)."""
    t0 = time.perf_counter()
    buf = bytearray(1 << 20)
    for p in release_files(root):
        with p.open("rb", buffering=0) as f:
            while f.readinto(buf):  # the read is the measurement: the bytes are not used
                continue
    return time.perf_counter() - t0


_FORWARD = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM
root = sys.argv[1]
seqs = [s["input_ids"] for s in json.load(open(root + "/golden/eval_set.json"))["sequences"]]
model = AutoModelForCausalLM.from_pretrained(root + "/model", dtype=torch.float32)
with torch.no_grad():
    for ids in seqs:
        model(torch.tensor([ids])).logits
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=Path("bench-out"))
    p.add_argument("--small", action="store_true")
    p.add_argument("--areas", default=",".join(AREAS))
    p.add_argument("--skip-whole", action="store_true", help="only the per-area runs")
    p.add_argument("--n-auto", action="store_true", help="the whole suite under -n auto too (first and warm)")
    p.add_argument("--drop-inputs", action="store_true", help="delete the built checkpoint once packed (disk)")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    m = merge_bench.MODELS["small" if args.small else "full"]
    args.workdir.mkdir(parents=True, exist_ok=True)
    release, pack_s = build_release(m, args.workdir, drop_inputs=args.drop_inputs)
    files = release_files(release)
    size = sum(f.stat().st_size for f in files)
    results: dict[str, Any] = {"model": m.name, "params": m.params(), "release_bytes": size, "pack_s": round(pack_s, 1)}
    merge_bench.evict(files)
    results["read_once_cold_s"] = round(read_floor(release), 2)
    results["read_once_warm_s"] = round(read_floor(release), 2)
    results["forward_floor"] = measure([sys.executable, "-c", _FORWARD, str(release)])
    print(json.dumps(results, indent=2), file=sys.stderr)
    cache = args.workdir / f"cache-{m.name}"
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--vla-release={release}"]
    rows = {}
    for area in args.areas.split(","):
        shutil.rmtree(cache, ignore_errors=True)
        merge_bench.evict(files)
        first = measure([*base, f"--vla-cache-dir={cache}", "-m", area, "--vla-allow-partial"])
        touched = merge_bench.resident_bytes(files)
        warm = measure([*base, f"--vla-cache-dir={cache}", "-m", area, "--vla-allow-partial"])
        rows[area] = {"first": first, "warm": warm, "release_touched_cold_mb": round((touched or 0) / MB)}
        print(area, json.dumps(rows[area]), file=sys.stderr)
    results["areas"] = rows
    if not args.skip_whole:
        shutil.rmtree(cache, ignore_errors=True)
        merge_bench.evict(files)
        results["whole_first"] = measure([*base, f"--vla-cache-dir={cache}"])
        results["whole_warm"] = measure([*base, f"--vla-cache-dir={cache}"])
    if args.n_auto:  # xdist: how many workers -n auto gives is the plugin's choice, by release size
        shutil.rmtree(cache, ignore_errors=True)
        merge_bench.evict(files)
        results["whole_first_n_auto"] = measure([*base, f"--vla-cache-dir={cache}", "-n", "auto"])
        results["whole_warm_n_auto"] = measure([*base, f"--vla-cache-dir={cache}", "-n", "auto"])
    out = args.out or args.workdir / f"suite-{m.name}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"{'area':<16}{'first s':>9}{'warm s':>9}{'cpu s':>8}{'RSS MB':>8}{'anon MB':>8}{'tree MB':>8}"
        f"{'read MB':>9}{'rchar MB':>10}{'touched MB':>11}"
    )
    for area, r in rows.items():
        w = r["warm"]
        print(
            f"{area:<16}{r['first']['wall_s']:>9}{w['wall_s']:>9}{w['cpu_s']:>8}{w['peak_rss_mb']:>8}"
            f"{w['peak_anon_mb']:>8}{w['peak_tree_rss_mb']:>8}{r['first']['read_bytes_mb']:>9}{w['rchar_mb']:>10}"
            f"{r['release_touched_cold_mb']:>11}"
        )
    print(
        f"release {size / 1e9:.2f} GB; read once: cold {results['read_once_cold_s']} s, "
        f"warm {results['read_once_warm_s']} s; "
        f"forward floor {results['forward_floor']['wall_s']} s"
    )
    for k in ("whole_first", "whole_warm", "whole_first_n_auto", "whole_warm_n_auto"):
        if k in results:
            print(k, results[k])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
