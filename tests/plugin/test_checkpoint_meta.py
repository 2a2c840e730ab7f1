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
from releases import run_printed_fix

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


ARGS_JSON = "checkpoint/iter_0001000/arguments.json"


def args_json(edit):
    def breaker(release: Path) -> None:
        path = release / ARGS_JSON
        path.write_text(edit(path.read_text()))

    return breaker


BREAKS = {
    "arguments-json-disagrees": (
        args_json(lambda t: t.replace('"num_layers": 4', '"num_layers": 2')),
        "test_arguments_json_agrees_with_rank_args",
        r"num_layers differs: 2, expected 4 as the rank files record it \(model_optim_rng.pt\) "
        rf"\[{ARGS_JSON}:num_layers\]"
        rf". Fix: in the release: `vla-release inspect checkpoint --args > {ARGS_JSON} && vla-release manifest .`",
    ),
    "arguments-json-truncated": (
        args_json(lambda t: t[: len(t) // 2]),
        "test_arguments_json_agrees_with_rank_args",
        rf"arguments.json unreadable: not valid JSON: .* \[{ARGS_JSON}\]",
    ),
    "swiglu-halves-swapped-on-one-rank": (
        lambda r: edit_rank(r, "mp_rank_01_000", lambda m: swap_halves(m["decoder.layers.0.mlp.linear_fc1.weight"])),
        "test_merge_equals_shipped_model",
        r"shipped tensor differs: .* elements differ .* \[model/model.safetensors:model.layers.0.mlp.gate_proj.weight\]"
        r".*Fix: in the release: `vla-release remerge \.`",
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
        assert len(run.passed) == 8


@pytest.mark.parametrize("name", ["arguments-json-disagrees", "arguments-json-truncated"])
def test_the_printed_fix_makes_the_arguments_check_pass(name, golden_copy, run_suite):
    """VLA-CKPT-006's fix, run as printed in the release (a shell command), makes the check and
    the manifest checks pass."""
    release = golden_copy("dense")
    BREAKS[name][0](release)
    run = run_suite(release, "-m", "checkpoint", "-k", "arguments_json")
    run_printed_fix(run.failed["test_arguments_json_agrees_with_rank_args"], release)
    again = run_suite(release, "-m", "checkpoint or manifest")
    assert not again.failed, again.failed
    assert "test_arguments_json_agrees_with_rank_args" in again.passed


def _as_torch_dist(release: Path) -> None:
    """The release's checkpoint rewritten in the torch_dist format (same layout, iteration, args)."""
    from vla_reference.megatron import MegatronSource, write_torch_dist
    from vla_reference.release import write_manifest

    src = MegatronSource.open(release / "checkpoint")
    shutil.rmtree(release / "checkpoint")
    write_torch_dist(src, release / "checkpoint", src.layout, iteration=src.iteration)
    write_manifest(release)


def test_a_torch_dist_release_is_checked_like_a_torch_one(golden_copy, run_suite):
    """torch_dist is accepted wherever the torch format is: the checkpoint and parity areas run on
    it (the sharded forward's ranks load it split at its recorded layout) and conform; a weight
    changed in its .distcp fails the merge check naming the shipped tensor."""
    release = golden_copy("dense")
    _as_torch_dist(release)
    assert not (release / "checkpoint/iter_0001000/mp_rank_00_000").exists()
    run = run_suite(release, "-m", "checkpoint or parity")
    assert not run.failed, run.failed
    assert {"test_merge_equals_shipped_model", "test_logit_parity[shipped-layout]"} <= set(run.passed)
    assert set(run.skipped) == {"test_arguments_json_agrees_with_rank_args"}, run.skipped

    from vla_reference.megatron import TorchDistSource, write_torch_dist

    src = TorchDistSource.open(release / "checkpoint")

    class Edited:  # the same checkpoint with one weight changed
        def __getattr__(self, name):
            return getattr(src, name)

        def get(self, key, *, meta=False):
            rows = src.get(key, meta=meta)
            if not meta and key.endswith("layers.1.self_attention.linear_proj.weight"):
                t = rows.tensor().clone()
                t[2, 3] += 0.5
                return type(rows).of(t)
            return rows

    edited = release.parent / "edited"
    write_torch_dist(Edited(), edited, src.layout, iteration=src.iteration)
    shutil.rmtree(release / "checkpoint")
    shutil.move(edited, release / "checkpoint")
    broken = run_suite(release, "-m", "checkpoint")
    assert "test_merge_equals_shipped_model" in broken.failed, broken.failed
    assert (
        "[model/model.safetensors:model.layers.1.self_attn.o_proj.weight]"
        in broken.failed["test_merge_equals_shipped_model"]
    )


def test_a_shipped_model_edited_after_the_merge_and_the_printed_remerge_fix(golden_copy, run_suite):
    """The shipped weights are not the checkpoint's merge (one tensor edited after merging, the
    manifest refreshed): the merge check fails, naming the tensor; its printed fix re-merges
    model/ as pack does (IDs and norm_stats kept) and the whole suite conforms again."""
    from vla_reference.release import write_manifest

    release = golden_copy("dense")
    f = release / "model/model.safetensors"
    tensors = load_file(f)
    tensors["model.norm.weight"] = tensors["model.norm.weight"] * 1.5
    save_file(tensors, f, metadata={"format": "pt"})
    write_manifest(release)
    run = run_suite(release, "-m", "checkpoint")
    assert list(run.failed) == ["test_merge_equals_shipped_model"], sorted(run.failed)
    message = run.failed["test_merge_equals_shipped_model"]
    assert "[model/model.safetensors:model.norm.weight]" in message, message
    assert run_printed_fix(message, release) == "vla-release remerge ."
    again = run_suite(release)
    assert not again.failed, sorted(again.failed)
    assert again.report["verdict"] == "CONFORMS"
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "README.md"):
        assert (release / "model" / name).read_bytes() == (GOLDEN / "dense/model" / name).read_bytes(), name
