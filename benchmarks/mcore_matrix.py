"""The megatron-core case x format matrix: max |Δlogits| of merge, reshard-then-megatron-core and our sharded forward.

    python benchmarks/mcore_matrix.py [--out matrix.json]

Uses the set ``tests/mcore`` generates with real megatron-core (cached; generated when absent).
For each case megatron-core can write and each format: the merge (stock transformers, float32)
against megatron-core's own logits; our sharded forward (``vla_reference.parity``: real
torch.distributed ranks over gloo) on the checkpoint megatron-core wrote; and each reshard target
of ``tests/mcore/test_mcore_converter.py`` read back and run by megatron-core. The tests assert
these within 1e-5; this prints the numbers as a Markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests" / "mcore"), str(REPO / "tests")]

from mcore_cases import EVAL_IDS, VOCAB_SIZE  # noqa: E402
from mcore_checks import hf_logits, megatron_logits  # noqa: E402
from mcore_fixtures import ensure_set, mcore_forward_batch  # noqa: E402
from test_mcore_converter import _CKPT_FORMAT, CONVERTED, RESHARDS  # noqa: E402

from vla_reference import merge, reshard  # noqa: E402
from vla_reference.megatron import MegatronSource, TorchDistSource, write_megatron  # noqa: E402
from vla_reference.parity import sharded_logits  # noqa: E402


def max_diff(got, want) -> float:
    return max(float((g[:, :VOCAB_SIZE].float() - w.float()).abs().max()) for g, w in zip(got, want, strict=True))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="write the matrix as JSON")
    args = p.parse_args(argv)
    root = ensure_set()
    rows: dict[str, dict[str, float | str]] = {}
    with tempfile.TemporaryDirectory(prefix="vla-mcore-matrix-") as tmp:
        work = Path(tmp)
        for case in CONVERTED:
            want = megatron_logits(root / case.name)
            row = rows.setdefault(case.name, {})
            for fmt in ("legacy", "torch_dist"):
                hf = work / case.name / fmt
                merge(root / case.name / fmt, hf, fsync=False)
                row[f"merge {fmt}"] = max_diff(hf_logits(hf), want)
                src = root / case.name / fmt
                if fmt == "legacy":
                    ranks = MegatronSource.open(src)
                else:  # split at its recorded layout, as the suite's vla_rank_checkpoint does
                    dist = TorchDistSource.open(src)
                    split = work / case.name / "torch_dist-ranks"
                    write_megatron(dist, split, dataclasses.replace(dist.layout, vpp=1), fsync=False)
                    ranks = MegatronSource.open(split, verify=False)
                got = sharded_logits(ranks, [list(s) for s in EVAL_IDS])
                row[f"sharded {fmt}"] = max_diff(got, want)
        requests, labels = [], []
        for case, target, fmt in RESHARDS:
            ckpt = work / "resharded" / case.name / f"{target.label()}-{fmt}"
            reshard(
                work / case.name / "legacy",
                ckpt,
                tp=target.tp,
                pp=target.pp,
                ep=target.ep,
                make_vocab_size_divisible_by=case.model.make_vocab_size_divisible_by,
                ckpt_format=_CKPT_FORMAT[fmt],
                fsync=False,
            )
            requests.append((ckpt, case.name, ckpt.with_suffix(".logits.safetensors"), target))
            labels.append((case.name, f"reshard {target.label()} {fmt}"))
        for (name, label), got in zip(labels, mcore_forward_batch(requests), strict=True):
            want = megatron_logits(root / name)
            rows[name][label] = max_diff([got[f"seq_{i}"] for i in range(len(EVAL_IDS))], want)
    cols = ["merge legacy", "merge torch_dist", "sharded legacy", "sharded torch_dist", "reshard (target, format)"]
    print("| case | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name, row in rows.items():
        reshards = ", ".join(
            f"{k.removeprefix('reshard ')}: {v:.1e}" for k, v in row.items() if k.startswith("reshard")
        )
        cells = [f"{row[c]:.1e}" for c in cols[:-1]] + [reshards]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
