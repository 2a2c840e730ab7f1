"""Every checkpoint check can fail: on a release broken one way, exactly that check fails."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from vla_reference import padded_vocab_size

from conftest import GOLDEN

RANK = "checkpoint/iter_0001000/{}/model_optim_rng.pt"


def edit_rank(release: Path, rank: str, edit) -> None:
    f = release / RANK.format(rank)
    state = torch.load(f, weights_only=True)
    edit(state["model"])
    torch.save(state, f)


def edit_shipped(release: Path, edit) -> None:
    f = release / "model/model.safetensors"
    tensors = load_file(f)
    edit(tensors)
    save_file(tensors, f, metadata={"format": "pt"})


def swap_halves(t: torch.Tensor) -> None:
    half = t.shape[0] // 2
    t.copy_(torch.cat([t[half:], t[:half]]))


def swap_k_v(t: torch.Tensor) -> None:
    # TP rank holds one query group: [q_0, q_1, k, v] (16 rows each)
    t[32:].copy_(torch.cat([t[48:64], t[32:48]]))


VOCAB = json.loads((GOLDEN / "dense/model/config.json").read_text())["vocab_size"]
PADDED = padded_vocab_size(VOCAB, 128, 2)  # what the TP=2 checkpoint holds


def pad_embedding(t: dict) -> None:
    e = t["model.embed_tokens.weight"]
    t["model.embed_tokens.weight"] = torch.cat([e, torch.zeros(PADDED - e.shape[0], e.shape[1])])


def flip_one(t: dict) -> None:
    t["model.layers.2.self_attn.o_proj.weight"][3, 5] *= -1


def drop_rank(release: Path) -> None:
    shutil.rmtree(release / "checkpoint/iter_0001000/mp_rank_01_001")


def change_eps(release: Path) -> None:
    cfg = json.loads((release / "model/config.json").read_text())
    cfg["rms_norm_eps"] = 1e-6
    (release / "model/config.json").write_text(json.dumps(cfg))


BREAKS = {
    "swiglu-halves-swapped-on-one-rank": (
        lambda r: edit_rank(r, "mp_rank_01_000", lambda m: swap_halves(m["decoder.layers.0.mlp.linear_fc1.weight"])),
        "test_merge_equals_shipped_model",
        r"shipped tensor differs: .* elements differ .* \[model/model.safetensors:model.layers.0.mlp.gate_proj.weight\]"
        r".*Fix: re-run `vla-release merge`",
    ),
    "qkv-groups-permuted": (
        lambda r: edit_rank(
            r, "mp_rank_01_000", lambda m: swap_k_v(m["decoder.layers.1.self_attention.linear_qkv.weight"])
        ),
        "test_merge_equals_shipped_model",
        r"\[model/model.safetensors:model.layers.1.self_attn.k_proj.weight\]",
    ),
    "replicated-norm-differs-on-one-rank": (
        lambda r: edit_rank(r, "mp_rank_01_001", lambda m: m["decoder.layers.0.pre_mlp_layernorm.weight"].mul_(1.01)),
        "test_replicated_tensors_identical",
        r"replicas differ: replicated tensor differs between .*mp_rank_00_001.* and .*mp_rank_01_001.*"
        r"\[decoder.layers.2.pre_mlp_layernorm.weight\]. Fix: replicated parameters must be identical",
    ),
    "padding-rows-not-stripped": (
        lambda r: edit_shipped(r, pad_embedding),
        "test_merge_equals_shipped_model",
        rf"\({PADDED}, 64\) torch.float32, expected \({VOCAB}, 64\) torch.float32 \(merged\) "
        r"\[model/model.safetensors:model.embed_tokens.weight\]",
    ),
    "tensor-flipped-in-shipped-safetensors": (
        lambda r: edit_shipped(r, flip_one),
        "test_merge_equals_shipped_model",
        r"1 of 4096 elements differ .* at \(3, 5\).*\[model/model.safetensors:model.layers.2.self_attn.o_proj.weight\]",
    ),
    "rank-missing": (
        drop_rank,
        "test_checkpoint_layout",
        r"checkpoint layout: missing rank directories mp_rank_01_001 for TP=2 PP=2 EP=1 "
        r"\[checkpoint/iter_0001000\]. Fix: copy every rank",
    ),
    "config-disagrees-with-args": (
        change_eps,
        "test_config_agrees_with_args",
        r"norm_epsilon differs: config.json says 1e-06, expected 1e-05 from the training args "
        r"\[model/config.json:rms_norm_eps\]",
    ),
}


@pytest.mark.parametrize("name", BREAKS)
def test_exactly_the_intended_check_fails(name, golden_copy, run_suite):
    breaker, test, message = BREAKS[name]
    release = golden_copy("dense")
    breaker(release)
    run = run_suite(release, "-m", "checkpoint")
    assert list(run.failed) == [test], run.failed
    assert re.search(message, run.failed[test], re.S), run.failed[test]
    run.assert_reported(test)


def test_round_trip_check_can_fail(golden_copy, run_suite, pytester):
    """A converter whose split loses information fails the round-trip check (and only it)."""
    pytester.makeconftest(
        """
        import pytest
        import vla_reference.megatron._rank_writer as r

        _split = r.split_tp
        patch = pytest.MonkeyPatch()

        def broken(rule, arch, full, *, tp, rank):
            part = _split(rule, arch, full, tp=tp, rank=rank)
            if rule.template.endswith("linear_proj.weight") and rank == 0:
                t = part.tensor().clone()
                t[0, 0] += 1.0
                return type(part).of(t)
            return part

        def pytest_sessionstart(session):
            patch.setattr(r, "split_tp", broken)

        def pytest_sessionfinish(session):
            patch.undo()
        """
    )
    release = golden_copy("dense")
    run = run_suite(release, "-m", "checkpoint", cache=pytester.path / "own-cache")  # keep its artefacts apart
    assert sorted(run.failed) == [f"test_reshard_round_trip[{t}]" for t in ("shipped", "tp1-pp1", "wider-tp")]
    assert "round trip at TP=1 PP=1 EP=1: 1 of 4096 elements differ" in run.failed["test_reshard_round_trip[tp1-pp1]"]


def test_golden_releases_conform(run_suite):
    from conftest import GOLDEN

    for name in ("dense", "moe"):
        run = run_suite(GOLDEN / name, "-m", "checkpoint")
        assert not run.failed and not run.skipped, (run.failed, run.skipped)
        assert len(run.passed) == 7
