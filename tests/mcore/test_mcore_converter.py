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
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from vla_reference import merge, reshard
from vla_reference.errors import UnsupportedModelError
from vla_reference.megatron import MegatronSource
from vla_reference.parity import sharded_logits

# isort: split
from mcore_cases import CASES, CASES_BY_NAME, EVAL_IDS, FORMATS, VOCAB_SIZE, Case, Layout

pytest_plugins = ["mcore_fixtures"]
# one worker runs the module: its module-scoped merges and megatron-core launches happen once
pytestmark = pytest.mark.xdist_group("mcore-converter")

# float32 on both sides: only the order of accumulation differs (megatron-core's [s, b, h]
# layout, its fused QKV split, all-reduced partial sums)
ATOL: float = 1e-5

# No stock transformers class computes these exactly: the merge refuses, naming the argument.
REFUSED = {"moe_shared": ("moe_shared_expert_gate", UnsupportedModelError)}
CONVERTED = [c for c in CASES if c.name not in REFUSED]


def _ids(cases):
    return [c.name for c in cases]


def _hf_logits(hf_dir: Path) -> list[torch.Tensor]:
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    assert type(model).__module__.startswith("transformers.models."), type(model)
    with torch.no_grad():
        return [model(torch.tensor([list(s)])).logits[0, :, :VOCAB_SIZE] for s in EVAL_IDS]


def _megatron_logits(case_dir: Path) -> list[torch.Tensor]:
    from safetensors.torch import load_file

    logits = load_file(case_dir / "logits.safetensors")
    return [logits[f"seq_{i}"] for i in range(len(EVAL_IDS))]


def assert_same_logits(got: list[torch.Tensor], want: list[torch.Tensor], what: str) -> float:
    __tracebackhide__ = True
    worst = 0.0
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.shape == w.shape, f"{what}: seq_{i} shape {tuple(g.shape)}, megatron-core {tuple(w.shape)}"
        diff = float((g.float() - w.float()).abs().max())
        worst = max(worst, diff)
        assert diff <= ATOL, f"{what}: seq_{i} max |logits - megatron-core's| = {diff:.3g} > {ATOL}"
        assert torch.equal(g.argmax(-1), w.argmax(-1)), f"{what}: seq_{i} top-1 differs from megatron-core's"
    return worst


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
        _hf_logits(merged[(case.name, fmt)]), _megatron_logits(mcore_set / case.name), f"{case.name} {fmt} merged"
    )


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", [CASES_BY_NAME[n] for n in REFUSED], ids=list(REFUSED))
def test_a_model_no_stock_class_computes_is_refused_naming_the_argument(case, fmt, mcore_set, tmp_path):
    key, error = REFUSED[case.name]
    with pytest.raises(error, match=key):
        merge(mcore_set / case.name / fmt, tmp_path / "hf", fsync=False)
    assert not (tmp_path / "hf").exists()


def _valid(case: Case, layout: Layout) -> bool:
    m = case.model
    groups = m.num_query_groups or m.num_attention_heads
    heads_per_group = m.num_attention_heads // groups
    if m.num_layers % layout.pp or m.num_attention_heads % layout.tp or m.hidden_size % layout.tp:
        return False
    if not (groups % layout.tp == 0 or (layout.tp % groups == 0 and heads_per_group % (layout.tp // groups) == 0)):
        return False
    if layout.ep > 1 and not (m.num_experts and m.num_experts % layout.ep == 0):
        return False
    return layout.tp * layout.pp * layout.dp <= 4


def reshard_targets(case: Case) -> list[Layout]:
    """Two layouts unlike the case's own: fewer query groups than TP ranks for a GQA model,
    expert parallelism for MoE, else a TP or pipeline split (two ranks where that suffices:
    four processes on two cores cost a launch twice the time)."""
    m = case.model
    groups = m.num_query_groups or m.num_attention_heads
    if m.num_experts:
        candidates = [Layout(ep=2, dp=2), Layout(tp=2)]
    elif groups < m.num_attention_heads:
        candidates = [Layout(tp=2 * groups), Layout(pp=2)]
    else:
        candidates = [Layout(tp=2), Layout(pp=2)]
    candidates += [Layout(tp=2), Layout(pp=2), Layout(tp=1), Layout(tp=2, pp=2)]
    own = (case.layout.tp, case.layout.pp, case.layout.ep)
    out: list[Layout] = []
    for layout in candidates:
        if (layout.tp, layout.pp, layout.ep) != own and _valid(case, layout) and layout not in out:
            out.append(layout)
    return out[:2]


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
        _megatron_logits(mcore_set / case.name),
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
    assert_same_logits(got, _megatron_logits(mcore_set / case.name), f"{case.name}: vla_reference.parity")
