"""Checks the megatron-core test modules share: logits against megatron-core's, reshard targets."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

# isort: split
from mcore_cases import EVAL_IDS, VOCAB_SIZE, Case, Layout

# float32 on both sides: only the order of accumulation differs (megatron-core's [s, b, h]
# layout, its fused QKV split, all-reduced partial sums)
ATOL: float = 1e-5


def hf_logits(hf_dir: Path) -> list[torch.Tensor]:
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    assert type(model).__module__.startswith("transformers.models."), type(model)
    with torch.no_grad():
        return [model(torch.tensor([list(s)])).logits[0, :, :VOCAB_SIZE] for s in EVAL_IDS]


def megatron_logits(case_dir: Path) -> list[torch.Tensor]:
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
