"""Write tiny Megatron checkpoints and logits with real megatron-core, or forward a checkpoint.

Usage::

    python tests/mcore/mcore_run.py generate OUT [--case NAME ...] [--format legacy|torch_dist ...]
    python tests/mcore/mcore_run.py forward CKPT_DIR --case NAME --out LOGITS.safetensors \\
        [--tp N --pp N --ep N --vpp N]
    python tests/mcore/mcore_run.py forward-args CKPT_DIR --eval-set EVAL_SET.json --out LOGITS.safetensors \
        [--tp N --pp N --ep N --vpp N]
    python tests/mcore/mcore_run.py forward-batch JOBS.json

``generate`` writes ``OUT/<case>/`` (case.json, eval_ids.json, logits.safetensors, legacy/,
torch_dist/) for the cases of ``mcore_cases.CASES`` (by default those the installed release can
train: ``mcore_release.Release.refusal``). ``forward`` builds the case's model at the
checkpoint's layout (its saved args, or the flags given), loads the checkpoint and writes
megatron-core's logits (``seq_0``.. [T, vocab], float32; the safetensors metadata lists the keys
a non-strict load missed). ``forward-args`` builds the model the checkpoint's own recorded args
describe instead (Megatron-LM's ``--use-checkpoint-args``; a rank file's ``args``, else
``arguments.json``) and writes the logits of each sequence of the eval set
(``{"sequences": [{"name", "input_ids"}, ...]}``, any lengths) under its name, sliced to the true
vocabulary. ``forward-batch`` runs many such loads: a JSON list of
``{"ckpt": DIR, "case": NAME, "out": FILE, "layout": {"tp":..} or null}``, or with
``"eval_set": FILE`` instead of ``"case"`` for ``forward-args``.

The megatron-core that runs is the one first on ``PYTHONPATH`` (``mcore_release.installed``).

Each launch starts one process per rank, forked from a server that imported torch and
megatron-core once, over gloo on 127.0.0.1; cases of one world size share a launch. A launch that
outlives ``--timeout`` is killed; a failing rank's traceback fails the command.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import tempfile
import time
import traceback
import uuid
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

# isort: split
from mcore_cases import CASES, CASES_BY_NAME, FORMATS, Layout
from mcore_release import installed

DEFAULT_TIMEOUT_S: Final = 600.0
_LOG: Final = logging.getLogger("mcore_run")


class LaunchError(RuntimeError):
    """A launch failed: a rank raised or died, or the launch ran past its timeout."""


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the rendezvous of one launch)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank_main(rank: int, world: int, port: int, jobs: list[dict[str, Any]], timeout_s: float, err: str) -> None:
    """Process target: run the rank; on any error write the traceback to ``err`` and exit 1.

    The rank leads its own process group, so that killing the launch also kills what the rank
    started (megatron's torch_dist writer spawns a multiprocessing Manager and forks writers).
    """
    os.setpgid(0, 0)
    try:
        import mcore_rank

        mcore_rank.run(rank, world, port, jobs, timeout_s)
    except BaseException:
        Path(err).write_text(traceback.format_exc())
        sys.stderr.write(f"[mcore rank {rank}/{world}] failed, traceback in {err}\n")
        sys.exit(1)


def _kill_group(p: multiprocessing.process.BaseProcess) -> None:
    """SIGKILL the process group a rank leads (the rank and everything it started), then reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(p.pid, signal.SIGKILL)  # type: ignore[arg-type]
    if p.is_alive():  # killed before it could lead a group of its own
        p.kill()
    p.join()


def launch(world: int, jobs: list[dict[str, Any]], timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Run ``jobs`` on ``world`` rank processes; raise LaunchError with the first failure's traceback.

    Example:
        >>> launch(1, [{"kind": "layout", "ckpt": "/set/llama_tp1/legacy", "out": "/tmp/l.json"}])  # doctest: +SKIP
    """
    ctx = multiprocessing.get_context("forkserver")
    # The forkserver imports these once for all ranks of all launches. It finds mcore_rank through
    # PYTHONPATH (Python 3.11's forkserver ignores the sys.path it is handed, and skips a preload
    # it cannot import without a word: every rank would then import megatron-core itself).
    here = str(Path(__file__).resolve().parent)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if here not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([here, *paths])
    ctx.set_forkserver_preload(["mcore_rank", "megatron.core.dist_checkpointing.strategies.torch"])
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="mcore-launch-") as tmp:
        errs = [os.path.join(tmp, f"rank{r}.txt") for r in range(world)]
        procs = [
            ctx.Process(target=_rank_main, args=(r, world, port, jobs, timeout_s, errs[r]), name=f"mcore-rank{r}")
            for r in range(world)
        ]
        started = time.monotonic()
        pending: dict[object, tuple[int, multiprocessing.process.BaseProcess]] = {}
        failed: list[int] = []
        try:
            for r, p in enumerate(procs):
                p.start()
                pending[p.sentinel] = (r, p)
            deadline = time.monotonic() + timeout_s
            while pending and not failed:
                ready = multiprocessing.connection.wait(list(pending), timeout=max(0.0, deadline - time.monotonic()))
                if not ready:
                    break
                for sentinel in ready:
                    r, p = pending.pop(sentinel)
                    p.join()
                    if p.exitcode != 0:
                        failed.append(r)
        finally:
            for p in procs:  # the still running ranks, and anything a finished rank left behind
                if p.pid is not None:
                    _kill_group(p)
        cases = sorted({j["case"] for j in jobs if "case" in j})
        kinds = "/".join(sorted({j["kind"] for j in jobs}))
        what = f"launch of {world} rank(s), {len(jobs)} {kinds} job(s)" + (f" ({', '.join(cases)})" if cases else "")
        if failed:
            r = failed[0]
            tb = (
                Path(errs[r]).read_text()
                if os.path.exists(errs[r])
                else f"(no traceback; exit code {procs[r].exitcode})"
            )
            raise LaunchError(f"{what}: rank {r} failed\n{tb}")
        if pending:
            alive = sorted(r for r, _ in pending.values())
            raise LaunchError(f"{what}: timed out after {timeout_s:.0f} s; ranks {alive} were still running")
        _LOG.info("%s: %.1f s", what, time.monotonic() - started)


def _by_world(jobs: list[tuple[int, dict[str, Any]]]) -> dict[int, list[dict[str, Any]]]:
    """Jobs grouped by world size, in order."""
    groups: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for world, job in jobs:
        groups[world].append(job)
    return dict(sorted(groups.items()))


def generate(
    out: Path,
    cases: Sequence[str] | None = None,
    formats: Sequence[str] = FORMATS,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Write ``out/<case>/`` for each case (all by default), one launch per world size.

    Example:
        >>> generate(Path("/tmp/mcore-set"), ["llama_tp1"])  # doctest: +SKIP
    """
    release = installed()
    refused = {c.name: why for c in CASES if (why := release.refusal(c))}
    asked = [n for n in cases or () if n in refused]
    if asked:
        raise LaunchError(
            f"megatron-core {release.version} cannot train " + "; ".join(f"{n}: {refused[n]}" for n in asked)
        )
    out.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    chosen = [CASES_BY_NAME[n] for n in cases] if cases else [c for c in CASES if c.name not in refused]
    if refused and not cases:
        _LOG.info(
            "megatron-core %s: not generated: %s", release.version, "; ".join(f"{n} ({w})" for n, w in refused.items())
        )
    jobs = [
        (
            c.layout.world,
            {"kind": "generate", "case": c.name, "out": str(out), "formats": list(formats), "token": token},
        )
        for c in chosen
    ]
    for world, group in _by_world(jobs).items():
        launch(world, group, timeout_s)


def saved_layouts(ckpts: Sequence[Path], timeout_s: float = DEFAULT_TIMEOUT_S) -> list[Layout]:
    """The layouts the checkpoints' saved args record (read in one one-rank launch)."""
    if not ckpts:
        return []
    with tempfile.TemporaryDirectory(prefix="mcore-layout-") as tmp:
        outs = [Path(tmp) / f"layout{i}.json" for i in range(len(ckpts))]
        jobs = [{"kind": "layout", "ckpt": str(c), "out": str(o)} for c, o in zip(ckpts, outs, strict=True)]
        launch(1, jobs, timeout_s)
        return [Layout(**json.loads(o.read_text())) for o in outs]


def forward_batch(requests: Sequence[dict[str, Any]], timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Run ``forward`` for each ``{"ckpt", "case", "out", "layout"}`` (layout dict, or None: saved),
    ``forward-args`` for each ``{"ckpt", "eval_set", "out", "layout"}``.

    Example:
        >>> req = {"ckpt": "/set/llama_tp2/legacy", "case": "llama_tp2", "out": "/tmp/l.safetensors"}
        >>> forward_batch([req])  # doctest: +SKIP
    """
    for req in requests:
        if "eval_set" not in req and req.get("case") not in CASES_BY_NAME:
            raise KeyError(f"unknown case {req.get('case')!r}; known: {', '.join(CASES_BY_NAME)}")
    ckpts = [Path(req["ckpt"]).resolve() for req in requests]
    unknown = [i for i, req in enumerate(requests) if not req.get("layout")]
    layouts = {i: Layout(**req["layout"]) for i, req in enumerate(requests) if req.get("layout")}
    layouts |= dict(zip(unknown, saved_layouts([ckpts[i] for i in unknown], timeout_s), strict=True))
    token = uuid.uuid4().hex[:8]
    jobs = []
    for i, req in enumerate(requests):
        out = Path(req["out"]).resolve()
        out.parent.mkdir(parents=True, exist_ok=True)
        job = {"ckpt": str(ckpts[i]), "out": str(out), "layout": layouts[i].__dict__, "token": token}
        if "eval_set" in req:
            job |= {"kind": "forward-args", "eval_set": str(Path(req["eval_set"]).resolve())}
        else:
            job |= {"kind": "forward", "case": req["case"]}
        jobs.append((layouts[i].world, job))
    for world, group in _by_world(jobs).items():
        launch(world, group, timeout_s)


def _layout_flags(ns: argparse.Namespace) -> dict[str, Any] | None:
    """The explicit layout of ``forward``'s flags, or None when none was given."""
    if ns.tp is None and ns.pp is None and ns.ep is None and ns.vpp is None:
        return None
    ep = ns.ep or 1
    return {"tp": ns.tp or 1, "pp": ns.pp or 1, "ep": ep, "vpp": ns.vpp, "dp": ep}


def _parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="mcore_run.py", description=__doc__.split("\n")[0])
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per launch (default 600)")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="write the case matrix")
    g.add_argument("out", type=Path)
    g.add_argument("--case", action="append", choices=list(CASES_BY_NAME), help="a case (repeatable; default all)")
    g.add_argument("--format", action="append", choices=list(FORMATS), help="a format (repeatable; default both)")
    f = sub.add_parser("forward", help="load a checkpoint into megatron-core and write its logits")
    f.add_argument("ckpt", type=Path, help="checkpoint root (holds latest_checkpointed_iteration.txt)")
    f.add_argument("--case", required=True, choices=list(CASES_BY_NAME), help="the model options to build")
    f.add_argument("--out", required=True, type=Path)
    for flag in ("tp", "pp", "ep", "vpp"):
        f.add_argument(f"--{flag}", type=int, default=None)
    a = sub.add_parser("forward-args", help="forward a checkpoint as its own recorded args describe it")
    a.add_argument("ckpt", type=Path, help="checkpoint root (holds latest_checkpointed_iteration.txt)")
    a.add_argument("--eval-set", required=True, type=Path, help='JSON {"sequences": [{"name", "input_ids"}]}')
    a.add_argument("--out", required=True, type=Path)
    for flag in ("tp", "pp", "ep", "vpp"):
        a.add_argument(f"--{flag}", type=int, default=None)
    b = sub.add_parser("forward-batch", help="many forward calls, grouped into launches by world size")
    b.add_argument("jobs", type=Path, help='JSON list of {"ckpt", "case" or "eval_set", "out", "layout"}')
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    ns = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    # megatron-core warns on import about every absent optional dependency (Apex, TE, ...)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    started = time.monotonic()
    try:
        if ns.command == "generate":
            generate(ns.out, ns.case, ns.format or FORMATS, ns.timeout)
        elif ns.command == "forward":
            forward_batch([{"ckpt": ns.ckpt, "case": ns.case, "out": ns.out, "layout": _layout_flags(ns)}], ns.timeout)
        elif ns.command == "forward-args":
            req = {"ckpt": ns.ckpt, "eval_set": ns.eval_set, "out": ns.out, "layout": _layout_flags(ns)}
            forward_batch([req], ns.timeout)
        else:
            forward_batch(json.loads(ns.jobs.read_text()), ns.timeout)
    except LaunchError as e:
        sys.stderr.write(f"mcore_run.py {ns.command}: {e}\n")
        return 1
    sys.stderr.write(f"mcore_run.py {ns.command}: done in {time.monotonic() - started:.1f} s\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
