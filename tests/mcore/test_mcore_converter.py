"""The converter judged by the framework that writes and reads the checkpoints: real megatron-core.

For every case of ``mcore_cases.CASES`` and both formats megatron-core saved:

- ``merge`` writes a Hugging Face directory that a stock transformers class loads, and whose
  logits are megatron-core's own (its pipeline schedule, float32) within 1e-5, same top-1;
- ``reshard`` of that merge to two other layouts (fewer query groups than TP ranks, expert
  parallelism) writes a checkpoint that megatron-core loads strictly, and whose megatron-core
  forward gives the same logits;
- our sharded forward (``vla_reference.parity``, real torch.distributed ranks) on the checkpoint
  megatron-core wrote gives megatron-core's logits.
"""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open

from vla_reference import merge, reshard
from vla_reference.errors import UnsupportedModelError
from vla_reference.megatron import MegatronSource
from vla_reference.parity import sharded_logits

# isort: split
from mcore_cases import CASES, CASES_BY_NAME, EVAL_IDS, FORMATS, VOCAB_SIZE
from mcore_checks import assert_same_logits, hf_logits, megatron_logits, reshard_targets

pytest_plugins = ["mcore_fixtures"]
# one worker runs the module: its module-scoped merges and megatron-core launches happen once
pytestmark = pytest.mark.xdist_group("mcore-converter")

# No stock transformers class computes these exactly: the merge refuses, naming the argument.
REFUSED = {"moe_shared": ("moe_shared_expert_gate", UnsupportedModelError)}
CONVERTED = [c for c in CASES if c.name not in REFUSED]


def _ids(cases):
    return [c.name for c in cases]


@pytest.fixture(scope="module")
def merged(mcore_set, tmp_path_factory):
    """Each converted case and format merged once: ``merged[(case, fmt)]`` is the HF directory."""
    root = tmp_path_factory.mktemp("merged")
    out = {}
    for case in CONVERTED:
        for fmt in FORMATS:
            dst = root / case.name / fmt
            merge(mcore_set / case.name / fmt, dst, fsync=False)
            out[(case.name, fmt)] = dst
    return out


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", CONVERTED, ids=_ids(CONVERTED))
def test_merge_gives_megatron_cores_logits(case, fmt, merged, mcore_set):
    assert_same_logits(
        hf_logits(merged[(case.name, fmt)]), megatron_logits(mcore_set / case.name), f"{case.name} {fmt} merged"
    )


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", [CASES_BY_NAME[n] for n in REFUSED], ids=list(REFUSED))
def test_a_model_no_stock_class_computes_is_refused_naming_the_argument(case, fmt, mcore_set, tmp_path):
    key, error = REFUSED[case.name]
    with pytest.raises(error, match=key):
        merge(mcore_set / case.name / fmt, tmp_path / "hf", fsync=False)
    assert not (tmp_path / "hf").exists()


# Legacy rank files hold experts as the module that will load them lays them out: our writer
# writes SequentialMLP's (local_experts.N), which a GroupedMLP run (--moe-grouped-gemm) reads
# from torch_dist only, where every expert implementation shares one layout.
# Each case goes to two layouts, one written in each format (the merge it starts from is the same
# for either source format: test_merge_gives_megatron_cores_logits).
RESHARDS = [
    (c, t, "torch_dist" if c.model.moe_grouped_gemm else fmt)
    for c in CONVERTED
    for t, fmt in zip(reshard_targets(c), FORMATS if CONVERTED.index(c) % 2 else FORMATS[::-1], strict=False)
]
_CKPT_FORMAT = {"legacy": "torch", "torch_dist": "torch_dist"}


@pytest.fixture(scope="module")
def resharded(merged, mcore_forward_batch, tmp_path_factory):
    """Every reshard target written by our converter and read back by megatron-core, in one batch."""
    root = tmp_path_factory.mktemp("resharded")
    requests = []
    for case, target, fmt in RESHARDS:
        ckpt = root / case.name / f"{target.label()}-{fmt}"
        reshard(
            merged[(case.name, "legacy")],
            ckpt,
            tp=target.tp,
            pp=target.pp,
            ep=target.ep,
            make_vocab_size_divisible_by=case.model.make_vocab_size_divisible_by,  # as the run that loads it
            ckpt_format=_CKPT_FORMAT[fmt],
            fsync=False,
        )
        requests.append((ckpt, case.name, ckpt.with_suffix(".logits.safetensors"), target))
    logits = mcore_forward_batch(requests)
    return {
        (case.name, target.label(), fmt): (out, got)
        for (case, target, fmt), (_, _, out, _), got in zip(RESHARDS, requests, logits, strict=True)
    }


@pytest.mark.parametrize(
    ("case", "target", "fmt"), RESHARDS, ids=[f"{c.name}-to-{t.label()}-{f}" for c, t, f in RESHARDS]
)
def test_resharded_checkpoint_loads_strictly_in_megatron_core_with_the_same_logits(
    case, target, fmt, resharded, mcore_set
):
    out, got = resharded[(case.name, target.label(), fmt)]
    with safe_open(out, framework="pt") as f:
        report = f.metadata() or {}
    assert json.loads(report.get("missing_keys", "[]")) == [], "megatron-core found keys missing"
    assert json.loads(report.get("unexpected_keys", "[]")) == [], "megatron-core found keys it does not know"
    assert_same_logits(
        [got[f"seq_{i}"] for i in range(len(EVAL_IDS))],
        megatron_logits(mcore_set / case.name),
        f"{case.name} resharded to {target.label()}, read by megatron-core",
    )


def test_reshard_targets_cover_fewer_groups_than_ranks_and_expert_parallelism():
    groups_below_tp = [
        t for c, t, _ in RESHARDS if t.tp > (c.model.num_query_groups or c.model.num_attention_heads) > 0
    ]
    assert groups_below_tp, "no reshard target has fewer query groups than TP ranks"
    assert any(t.ep > 1 for _, t, _ in RESHARDS), "no reshard target has expert parallelism"
    assert {f for _, _, f in RESHARDS} == set(FORMATS)


LEGACY_SHARDED = CONVERTED


@pytest.mark.parametrize("case", LEGACY_SHARDED, ids=_ids(LEGACY_SHARDED))
def test_our_sharded_forward_gives_megatron_cores_logits(case, mcore_set):
    src = MegatronSource.open(mcore_set / case.name / "legacy")
    got = [t[:, :VOCAB_SIZE] for t in sharded_logits(src, [list(s) for s in EVAL_IDS])]
    assert_same_logits(got, megatron_logits(mcore_set / case.name), f"{case.name}: vla_reference.parity")


TORCH_DIST_SHARDED = [CASES_BY_NAME[n] for n in ("llama_tp2_pp2", "llama_pp2_vpp2", "moe_tp2_ep2")]


@pytest.mark.parametrize("case", TORCH_DIST_SHARDED, ids=_ids(TORCH_DIST_SHARDED))
def test_our_sharded_forward_on_a_torch_dist_checkpoint_gives_megatron_cores_logits(case, mcore_set, tmp_path):
    """What the suite's ``vla_rank_checkpoint`` does with a torch_dist release: split it at its
    recorded TP/PP/EP (virtual stages dropped: they only reorder the pipeline's work), then run
    the sharded forward on those ranks."""
    import dataclasses

    from vla_reference.megatron import TorchDistSource, write_megatron

    dist = TorchDistSource.open(mcore_set / case.name / "torch_dist")
    write_megatron(dist, tmp_path / "ranks", dataclasses.replace(dist.layout, vpp=1), fsync=False)
    src = MegatronSource.open(tmp_path / "ranks", verify=False)
    assert (src.layout.tp, src.layout.pp, src.layout.ep) == (dist.layout.tp, dist.layout.pp, dist.layout.ep)
    got = [t[:, :VOCAB_SIZE] for t in sharded_logits(src, [list(s) for s in EVAL_IDS])]
    assert_same_logits(got, megatron_logits(mcore_set / case.name), f"{case.name}: torch_dist split, sharded")
