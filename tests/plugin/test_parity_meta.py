"""Every parity failure mode is caught: on a release broken one way, the parity check fails (only it)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from vla_reference import padded_vocab_size


def edit_shipped(release: Path, edit) -> None:
    f = release / "model/model.safetensors"
    tensors = load_file(f)
    edit(tensors)
    save_file(tensors, f, metadata={"format": "pt"})


def permute_groups(t: dict) -> None:
    """q, k and v of layer 1 with their two query groups swapped (o_proj left alone)."""
    p = "model.layers.1.self_attn."
    for name, rows in (("q_proj", 32), ("k_proj", 16), ("v_proj", 16)):
        w = t[p + name + ".weight"]
        t[p + name + ".weight"] = torch.cat([w[rows:], w[:rows]])


def naive_swiglu(t: dict) -> None:
    """fc1 ranks concatenated as [g0; u0; g1; u1] and then halved: the classic silent bug."""
    p = "model.layers.0.mlp."
    g, u = t[p + "gate_proj.weight"], t[p + "up_proj.weight"]
    half = g.shape[0] // 2
    naive = torch.cat([g[:half], u[:half], g[half:], u[half:]])
    t[p + "gate_proj.weight"], t[p + "up_proj.weight"] = naive[: g.shape[0]].clone(), naive[g.shape[0] :].clone()


def keep_padding(release: Path) -> None:
    cfg_path = release / "model/config.json"
    cfg = json.loads(cfg_path.read_text())
    padded = padded_vocab_size(cfg["vocab_size"], 128, 2)

    def pad(t: dict) -> None:
        for name in ("model.embed_tokens.weight", "lm_head.weight"):
            e = t[name]
            t[name] = torch.cat([e, torch.full((padded - e.shape[0], e.shape[1]), 0.5)])

    edit_shipped(release, pad)
    cfg["vocab_size"] = padded
    cfg_path.write_text(json.dumps(cfg))


def swap_expert(t: dict) -> None:
    p = "model.layers.0.mlp.experts."
    for w in ("gate_proj", "up_proj", "down_proj"):
        a, b = f"{p}0.{w}.weight", f"{p}1.{w}.weight"
        t[a], t[b] = t[b].clone(), t[a].clone()


def drop_layer(release: Path) -> None:
    cfg_path = release / "model/config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["num_hidden_layers"] -= 1
    cfg_path.write_text(json.dumps(cfg))
    last = cfg["num_hidden_layers"]
    edit_shipped(release, lambda t: [t.pop(k) for k in list(t) if k.startswith(f"model.layers.{last}.")])


def norm_from_wrong_rank(release: Path) -> None:
    """One TP rank's copy of a replicated norm differs: the sharded model uses it, the merge took rank 0's."""
    f = release / "checkpoint/iter_0001000/mp_rank_01_000/model_optim_rng.pt"
    state = torch.load(f, weights_only=True)
    state["model"]["decoder.layers.0.input_layernorm.weight"].mul_(1.5)
    torch.save(state, f)


BREAKS = {
    "qkv-groups-permuted": ("dense", lambda r: edit_shipped(r, permute_groups)),
    "swiglu-halves-concatenated-naively": ("dense", lambda r: edit_shipped(r, naive_swiglu)),
    "padding-rows-kept": ("dense", keep_padding),
    "one-expert-swapped": ("moe", lambda r: edit_shipped(r, swap_expert)),
    "layer-dropped": ("dense", drop_layer),
    "norm-from-the-wrong-rank": ("dense", norm_from_wrong_rank),
}


STREAM = "--vla-stream-weights-above=0"  # every model run one module's weights at a time


@pytest.mark.parametrize("name", BREAKS)
def test_parity_fails(name, golden_copy, run_suite):
    _assert_parity_fails(name, golden_copy, run_suite, "from_pretrained")


@pytest.mark.parametrize("name", ["qkv-groups-permuted", "padding-rows-kept", "one-expert-swapped"])
def test_parity_fails_with_the_weights_streamed(name, golden_copy, run_suite):
    """The streamed loader (the one a large release gets) sees the same breaks: a layout bug, a
    shape the config contradicts, and fused MoE experts out of order."""
    _assert_parity_fails(name, golden_copy, run_suite, "streamed", STREAM)


def _assert_parity_fails(name, golden_copy, run_suite, loader, *args):
    which, breaker = BREAKS[name]
    release = golden_copy(which)
    breaker(release)
    run = run_suite(release, "-m", "parity", *args)
    assert list(run.failed) == ["test_logit_parity[shipped-layout]"], run.failed
    message = run.failed["test_logit_parity[shipped-layout]"]
    assert "logit parity at the shipped-layout" in message
    assert re.search(r"sequence\s+tokens\s+max abs\s+max rel\s+KL\s+top-1\s+worst", message), message
    assert "OUT" in message and "Fix: " in message
    check = run.assert_reported("test_logit_parity[shipped-layout]")
    measured = check["measured"]
    if measured["parity_logits"]["merged model"] == "computed":  # else an earlier run's, same bytes
        assert measured["parity_loader"] == {"merged model": loader}, measured
    else:
        assert loader == "from_pretrained", "the streamed breaks edit model/: their logits are new"
    parity = check["measured"]["parity"]
    assert any(not s["within"] for m in parity.values() for s in m["sequences"]), parity
    for m in parity.values():  # every comparable position is in the histogram (shapes may differ: null)
        comparable = [s for s in m["sequences"] if s["max_abs"] is not None]
        assert (sum(m["histogram"]["counts"]) > 0) == bool(comparable), m
    assert "<svg" in run.html and "distribution of |Δlogit|" in run.html


def test_golden_releases_pass_parity(run_suite):
    from conftest import GOLDEN

    for name in ("dense", "moe"):
        for args in ((), (STREAM,)):
            run = run_suite(GOLDEN / name, "-m", "parity", *args)
            assert sorted(run.passed) == ["test_logit_parity[alt-layout]", "test_logit_parity[shipped-layout]"], run


def test_tolerance_flags_override_the_defaults(run_suite):
    from conftest import GOLDEN

    run = run_suite(GOLDEN / "dense", "-m", "parity", "--vla-logit-atol=0", "--vla-logit-rtol=0", "--vla-logit-kl=0")
    assert "test_logit_parity[shipped-layout]" in run.failed
    assert "atol 0, rtol 0, KL 0" in run.failed["test_logit_parity[shipped-layout]"]


def test_alt_layout_check_can_fail(golden_copy, run_suite, pytester):
    """A split bug that only appears at TP=4 (query groups < TP) fails the other-layout check, and only it."""
    pytester.makeconftest(
        """
        import pytest
        import vla_reference.megatron._rank_writer as w

        _split = w.split_tp
        patch = pytest.MonkeyPatch()

        def broken(rule, arch, full, *, tp, rank):
            part = _split(rule, arch, full, tp=tp, rank=rank)
            if tp == 4 and rank == 3 and rule.template.endswith("linear_qkv.weight"):
                t = part.tensor().clone()
                t[-16:] = t[-32:-16].clone()  # V of the shared group overwritten by its K
                return type(part).of(t)
            return part

        def pytest_sessionstart(session):
            patch.setattr(w, "split_tp", broken)

        def pytest_sessionfinish(session):
            patch.undo()
        """
    )
    release = golden_copy("dense")
    run = run_suite(release, "-m", "parity", cache=pytester.path / "own-cache")
    assert list(run.failed) == ["test_logit_parity[alt-layout]"], run.failed
    assert "sharded TP=4 PP=1 EP=1 (resharded) vs its merge" in run.failed["test_logit_parity[alt-layout]"]


def set_layers(release: Path, value: int) -> None:
    cfg_path = release / "model/config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["num_hidden_layers"] = value
    cfg_path.write_text(json.dumps(cfg))


@pytest.mark.parametrize(
    ("layers", "named"),
    [(10**12, "'num_hidden_layers' is 1000000000000"), (3, "unexpected model.layers.3.")],
    ids=["absurd", "one-too-few"],
)
def test_config_not_describing_the_weights_is_reported_never_built(layers, named, golden_copy, run_suite):
    """transformers builds whatever config.json says (10**12 layers would never finish): the
    parity check reads the model only once config.json describes its weights, and otherwise
    leaves the defect to the checks that report it."""
    release = golden_copy("dense")
    set_layers(release, layers)
    run = run_suite(release, "-m", "parity or checkpoint")
    assert "test_config_agrees_with_args" in run.failed, run.failed
    assert not [t for t in run.failed if t.startswith("test_logit_parity")], run.failed
    skipped = run.skipped["test_logit_parity[shipped-layout]"]
    assert "reported by test_config_agrees_with_args" in skipped and named in skipped, skipped


def test_config_not_describing_the_weights_fails_parity_without_a_checkpoint(golden_copy, run_suite):
    """An inference-only release has no config check to report it: the parity check fails, naming it."""
    import shutil

    release = golden_copy("dense")
    shutil.rmtree(release / "checkpoint")
    set_layers(release, 10**12)
    run = run_suite(release, "-m", "parity")
    message = run.failed["test_logit_parity[shipped-layout]"]
    assert "does not load as written" in message and "num_hidden_layers" in message, message


@pytest.mark.parametrize("token", [1e308, -1, 10**9, True], ids=["huge-float", "negative", "past-the-vocab", "bool"])
def test_eval_set_token_outside_the_vocabulary_names_it(token, golden_copy, run_suite):
    """A token id the model's embedding cannot look up fails the parity check naming the sequence,
    instead of a raw overflow or IndexError inside transformers."""
    release = golden_copy("dense")
    path = release / "golden/eval_set.json"
    data = json.loads(path.read_text())
    data["sequences"][0]["input_ids"][3] = token
    path.write_text(json.dumps(data))
    run = run_suite(release, "-m", "parity")
    assert sorted(run.failed) == ["test_logit_parity[alt-layout]", "test_logit_parity[shipped-layout]"], run.failed
    message = run.failed["test_logit_parity[shipped-layout]"]
    assert "golden eval set unreadable: sequences[0].input_ids is not a non-empty list of token ids" in message
    assert "golden/eval_set.json" in message


def test_stale_expected_logits_without_a_checkpoint_and_the_printed_logits_fix(golden_copy, run_suite):
    """A fine-tune with no checkpoint whose expected logits are its base's (not recomputed after
    fine-tuning): parity fails at the shipped layout; the printed fix recomputes them from the
    shipped model, as pack does, and the suite conforms (partial: no checkpoint)."""
    import shutil

    from vla_reference.release import write_manifest

    from conftest import GOLDEN
    from releases import run_printed_fix

    release = golden_copy("dense-ft")
    shutil.copyfile(GOLDEN / "dense/golden/expected_logits.safetensors", release / "golden/expected_logits.safetensors")
    write_manifest(release)
    run = run_suite(release, "-m", "parity")
    assert list(run.failed) == ["test_logit_parity[shipped-layout]"], sorted(run.failed)
    message = run.failed["test_logit_parity[shipped-layout]"]
    assert run_printed_fix(message, release) == "vla-release logits ."
    again = run_suite(release, f"--vla-baseline={GOLDEN / 'dense'}", "--vla-allow-partial")
    assert not again.failed, sorted(again.failed)
    assert again.report["verdict"] == "CONFORMS"


def test_logits_are_kept_by_content_and_recomputed_when_it_changes(golden_copy, run_suite, tmp_path):
    """A second run on the same bytes reads every comparison's logits from the artefact cache
    (and says so in the report); a changed weight is a new key: computed again, and it fails."""
    release, cache = golden_copy("dense"), tmp_path / "cache"
    labels = {
        "test_logit_parity[shipped-layout]": ("merged model", "sharded TP=2 PP=2 EP=1"),
        "test_logit_parity[alt-layout]": ("its merge", "sharded TP=4 PP=1 EP=1"),
    }

    def sources(run) -> dict[str, dict[str, str]]:
        return {name: run.check(name)["measured"]["parity_logits"] for name in labels}

    first = run_suite(release, "-m", "parity", cache=cache)
    assert sorted(first.passed) == sorted(labels), first.failed
    assert sources(first) == {n: dict.fromkeys(ls, "computed") for n, ls in labels.items()}
    second = run_suite(release, "-m", "parity", cache=cache)
    assert sorted(second.passed) == sorted(labels), second.failed
    assert sources(second) == {n: dict.fromkeys(ls, "cached") for n, ls in labels.items()}
    edit_shipped(release, permute_groups)
    third = run_suite(release, "-m", "parity", cache=cache)
    assert list(third.failed) == ["test_logit_parity[shipped-layout]"], third.failed
    assert third.check("test_logit_parity[shipped-layout]")["measured"]["parity_logits"] == {
        "merged model": "computed",
        "sharded TP=2 PP=2 EP=1": "cached",  # the checkpoint did not change
    }
