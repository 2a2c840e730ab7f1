"""The long fuzz campaign: random mutations of golden releases, the whole suite on each, the oracle's verdict.

    python benchmarks/fuzz.py --releases 200 --seed 1 --out fuzz.json

Each release is a copy of a golden release with one mutation from ``tests/mutations.py`` (the
same kinds the bounded CI test draws with hypothesis: byte flips, truncations, deleted, retyped
and duplicated JSON fields, removed, renamed and linked files, FIFOs, hostile paths; release.json
refreshed or not). The suite runs on it in a subprocess with a time bound and a memory bound; the oracle
(``mutations.judge``) asks for a verdict in time and memory, no internal error, every failure naming a file
inside the release and the release unchanged. Prints one line per release that broke the oracle
and a summary (releases tried, crashes, hangs, failures naming no file, writes, runs over the memory
bound, verdicts, time and each run's peak RSS); ``--out`` writes the summary and every problem as JSON. The numbers
in docs/security.md come from this script.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import mutations  # noqa: E402


def draw(rng: random.Random, files: list[str]) -> mutations.Mutation:
    return mutations.Mutation(
        kind=rng.choice(mutations.KINDS),
        file=rng.choice(files),
        pick=rng.randrange(1 << 20),
        value=rng.randrange(256),
        refresh=rng.random() < 0.5,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--releases", type=int, default=100, help="how many mutated releases to try")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--golden", nargs="+", default=["dense", "moe"], help="golden releases to mutate")
    p.add_argument("--timeout", type=float, default=mutations.TIME_BOUND_S, help="seconds per release")
    p.add_argument("--out", type=Path, help="write the summary and every problem as JSON")
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    sources = {name: REPO / "golden" / name for name in args.golden}
    files = {name: mutations.release_files(path) for name, path in sources.items()}
    verdicts: Counter[str] = Counter()
    problems: list[dict[str, object]] = []
    seconds: list[float] = []
    peaks: list[float] = []  # MiB, the largest process of each run
    counts = Counter()
    with tempfile.TemporaryDirectory(prefix="vla-fuzz-") as tmp:
        work, cache = Path(tmp), Path(tmp) / "cache"
        for i in range(args.releases):
            name = rng.choice(args.golden)
            m = draw(rng, files[name])
            case = work / f"case-{i}"
            release, outside = case / "release", case / "outside"
            shutil.copytree(sources[name], release)
            outside.mkdir()
            applied = mutations.apply(m, release, outside)
            counts["applied" if applied else "not applicable"] += 1
            before = mutations.snapshot(release)
            status, output, took, peak = mutations.run_suite(release, cache, case / "report.json", timeout=args.timeout)
            v = mutations.judge(m, release, before, status, output, took, case / "report.json", peak)
            seconds.append(took)
            peaks.append(peak)
            verdicts[(v.verdict_line or "none").split(": ", 1)[-1].split(" (")[0]] += 1
            for problem in v.problems:
                kind = (
                    "hang"
                    if problem.startswith("no verdict within")
                    else "write"
                    if problem.startswith("the release was written")
                    else "internal error"
                    if problem.startswith(("internal error", "exit status")) or ": a bare " in problem
                    else "names no file"
                    if "no finding names a file" in problem
                    else "memory"
                    if problem.startswith("over the memory bound")
                    else "no verdict"
                )
                counts[kind] += 1
                problems.append({"golden": name, "mutation": str(m), "kind": kind, "problem": problem})
                print(f"[{kind}] {name}: {m}: {problem[:300]}", flush=True)
            shutil.rmtree(case, ignore_errors=True)
            if (i + 1) % 10 == 0:
                print(f"{i + 1}/{args.releases} releases, {len(problems)} problems", file=sys.stderr, flush=True)
    summary = {
        "releases": args.releases,
        "seed": args.seed,
        "golden": args.golden,
        "applied": counts["applied"],
        "not_applicable": counts["not applicable"],
        "hangs": counts["hang"],
        "internal_errors": counts["internal error"],
        "failures_naming_no_file": counts["names no file"],
        "releases_written": counts["write"],
        "no_verdict": counts["no verdict"],
        "verdicts": dict(verdicts),
        "seconds_median": round(statistics.median(seconds), 2) if seconds else None,
        "seconds_max": round(max(seconds), 2) if seconds else None,
        "over_memory_bound": counts["memory"],
        "memory_bound_mib": mutations.MEMORY_BOUND_MIB,
        "peak_rss_mib_median": round(statistics.median(peaks)) if peaks else None,
        "peak_rss_mib_max": round(max(peaks)) if peaks else None,
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(json.dumps(summary, indent=2))
    if args.out:
        tmp_out = args.out.with_name(args.out.name + ".tmp")
        tmp_out.write_text(json.dumps({"summary": summary, "problems": problems}, indent=2) + "\n")
        tmp_out.replace(args.out)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
