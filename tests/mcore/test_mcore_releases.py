"""The converter against an older megatron-core release: formats and argument names drift.

Every release in ``mcore_release.RELEASES`` other than the venv's (today 0.13.1, installed beside
it by ``scripts/setup.sh``) writes the cases it can train, in both formats, with its own modules
and saver. For each: ``merge`` gives that release's own logits (stock transformers, float32,
within 1e-5, same top-1); a reshard of the merge to another layout loads strictly in that release
and gives the same logits; and the golden releases' training checkpoints, read through their
recorded args (``--use-checkpoint-args``) by that release, give their expected logits.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from vla_reference import merge, reshard
from vla_reference.errors import UnsupportedModelError
from vla_reference.parity import compare_logits, default_tolerance

# isort: split
from mcore_cases import CASES, FORMATS
from mcore_checks import assert_same_logits, hf_logits, megatron_logits, reshard_targets
from mcore_release import DEFAULT_VERSION, RELEASES

pytest_plugins = ["mcore_fixtures"]
pytestmark = pytest.mark.xdist_group("mcore-releases")

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
OLDER = [v for v in RELEASES if v != DEFAULT_VERSION]
REFUSED = {"moe_shared": "moe_shared_expert_gate"}  # no stock transformers class computes it
CASE_MATRIX = [(v, c) for v in OLDER for c in CASES if RELEASES[v].refusal(c) is None]
MERGED = [(v, c, f) for v, c in CASE_MATRIX for f in FORMATS if c.name not in REFUSED]
# one layout per case, written in the format the case's position picks (both formats covered)
RESHARDS = [
    (v, c, t, "torch_dist" if c.model.moe_grouped_gemm or i % 2 else "legacy")
    for i, (v, c) in enumerate(x for x in CASE_MATRIX if x[1].name not in REFUSED)
    for t in [t for t in reshard_targets(c) if RELEASES[v].refusal(dataclasses.replace(c, layout=t)) is None][:1]
]


@pytest.fixture(scope="module")
def release_sets(mcore_ensure_set) -> dict[str, Path]:
    """Each older release's generated set (cached like the default one)."""
    return {v: mcore_ensure_set(release=v) for v in OLDER}


@pytest.fixture(scope="module")
def merged(release_sets, tmp_path_factory):
    root = tmp_path_factory.mktemp("merged-older")
    out = {}
    for v, case, fmt in MERGED:
        dst = root / v / case.name / fmt
        merge(release_sets[v] / case.name / fmt, dst, fsync=False)
        out[(v, case.name, fmt)] = dst
    return out


def test_an_older_release_is_covered():
    """The matrix is not empty: an older release is recorded and trains most cases."""
    assert OLDER, "mcore_release.RELEASES records no release besides the default"
    assert all(sum(v == w for w, _ in CASE_MATRIX) >= 10 for v in OLDER), CASE_MATRIX


@pytest.mark.parametrize(("version", "case", "fmt"), MERGED, ids=[f"{v}-{c.name}-{f}" for v, c, f in MERGED])
def test_merge_gives_that_releases_logits(version, case, fmt, merged, release_sets):
    got = hf_logits(merged[(version, case.name, fmt)])
    assert_same_logits(got, megatron_logits(release_sets[version] / case.name), f"{version} {case.name} {fmt}")


@pytest.mark.parametrize("version", OLDER)
def test_the_refused_model_is_refused_naming_the_argument(version, release_sets, tmp_path):
    for name, key in REFUSED.items():
        if not (release_sets[version] / name).is_dir():
            continue
        with pytest.raises(UnsupportedModelError, match=key):
            merge(release_sets[version] / name / "torch_dist", tmp_path / name, fsync=False)


@pytest.fixture(scope="module")
def resharded(merged, mcore_forward_batch, tmp_path_factory):
    root = tmp_path_factory.mktemp("resharded-older")
    out = {}
    for v in OLDER:
        mine = [(c, t, f) for w, c, t, f in RESHARDS if w == v]
        requests = []
        for case, target, fmt in mine:
            ckpt = root / v / case.name / f"{target.label()}-{fmt}"
            reshard(
                merged[(v, case.name, "legacy")],
                ckpt,
                tp=target.tp,
                pp=target.pp,
                ep=target.ep,
                make_vocab_size_divisible_by=case.model.make_vocab_size_divisible_by,
                ckpt_format={"legacy": "torch", "torch_dist": "torch_dist"}[fmt],
                fsync=False,
            )
            requests.append((ckpt, case.name, ckpt.with_suffix(".logits.safetensors"), target))
        logits = mcore_forward_batch(requests, release=v)
        for (case, target, fmt), (_, _, path, _), got in zip(mine, requests, logits, strict=True):
            out[(v, case.name, target.label(), fmt)] = (path, got)
    return out


@pytest.mark.parametrize(
    ("version", "case", "target", "fmt"), RESHARDS, ids=[f"{v}-{c.name}-to-{t.label()}-{f}" for v, c, t, f in RESHARDS]
)
def test_resharded_checkpoint_loads_strictly_in_that_release(version, case, target, fmt, resharded, release_sets):
    path, got = resharded[(version, case.name, target.label(), fmt)]
    with safe_open(path, framework="pt") as f:
        report = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    assert (report["missing_keys"], report["unexpected_keys"]) == ([], []), report
    assert report["megatron_core"] == version
    want = megatron_logits(release_sets[version] / case.name)
    assert_same_logits([got[f"seq_{i}"] for i in range(len(want))], want, f"{version} {case.name} -> {target.label()}")


def _runs_golden(version: str, release: str) -> bool:
    """Whether megatron-core ``version`` can build the golden release's model at its recorded layout
    (0.13.1 requires sequence parallelism with EP and TP together: golden/moe is TP2 EP2 without)."""
    args = json.loads((GOLDEN / release / "checkpoint" / "iter_0001000" / "arguments.json").read_text())
    ep_with_tp = args["expert_model_parallel_size"] > 1 and args["tensor_model_parallel_size"] > 1
    return RELEASES[version].ep_tp_without_sp or not ep_with_tp or bool(args.get("sequence_parallel"))


GOLDEN_RUNS = [(v, r) for v in OLDER for r in ("dense", "moe") if _runs_golden(v, r)]


def test_the_golden_matrix_is_what_the_release_records_allow():
    assert ("0.13.1", "dense") in GOLDEN_RUNS and ("0.13.1", "moe") not in GOLDEN_RUNS, GOLDEN_RUNS


@pytest.mark.parametrize(("version", "release"), GOLDEN_RUNS, ids=[f"{v}-{r}" for v, r in GOLDEN_RUNS])
def test_that_release_gives_the_golden_expected_logits(version, release, mcore_forward_args, tmp_path):
    """An older megatron-core, reading the golden checkpoint through its recorded args, computes
    the release's expected logits (float32 parity tolerance, top-1 tie-aware)."""
    from safetensors.torch import load_file

    root = GOLDEN / release
    out = tmp_path / "logits.safetensors"
    [got] = mcore_forward_args([(root / "checkpoint", root / "golden" / "eval_set.json", out, None)], release=version)
    with safe_open(out, framework="pt") as f:
        report = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    assert (report["missing_keys"], report["unexpected_keys"], report["megatron_core"]) == ([], [], version), report
    want = load_file(root / "golden" / "expected_logits.safetensors")
    tol = default_tolerance(torch.float32)
    stats = [compare_logits(n, got[n], want[n], tol) for n in sorted(want)]
    assert set(got) == set(want) and all(s.within for s in stats), [s for s in stats if not s.within]
