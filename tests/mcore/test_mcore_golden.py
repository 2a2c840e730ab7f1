"""megatron-core judges the golden releases' training checkpoints, as their own args describe them.

For ``golden/dense`` (Llama-style, TP2 PP2) and ``golden/moe`` (experts every 2nd layer, TP2 PP2
EP2: eight ranks), megatron-core 0.16.1 builds the GPTModel the checkpoint's recorded args
describe (Megatron-LM's ``--use-checkpoint-args``, ``mcore_run.py forward-args``) at the layout
they record, loads the shipped training checkpoint strictly, and its pipeline schedule's logits on
the release's eval set (sequences of different lengths) match ``golden/expected_logits.safetensors``
within the float32 parity tolerance with the same top-1. The MoE release's weights are bf16; they
are evaluated in float32, as the expected logits were (the sharded forward over the checkpoint, float32).

The judge is checked too: on checkpoints megatron-core wrote itself (args as a Namespace in 0.16
names, as a plain dict, in torch_dist's common.pt) the same path reproduces megatron-core's own
logits, and on a golden checkpoint with one key renamed both checks fail, naming the key.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from vla_reference.parity import compare_logits, default_tolerance, format_table

# isort: split
from mcore_cases import EVAL_IDS

pytest_plugins = ["mcore_fixtures"]
# one worker runs the module: its megatron-core launches happen once
pytestmark = pytest.mark.xdist_group("mcore-golden")

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
RELEASES = ["dense", "moe"]
TOLERANCE = default_tolerance(torch.float32)  # atol 1e-4, rtol 1e-4; ties within it agree on top-1
# Checkpoints megatron-core wrote, read back through their own args: a Namespace with 0.16's names
# (layernorm_epsilon 1e-6), a plain dict with the fused tanh GELU, torch_dist's common.pt with EP.
OWN = [("llama_tp2_pp2", "legacy"), ("gpt2_fused_gelu", "legacy"), ("moe_tp2_ep2", "torch_dist")]
# The deliberately broken copy of golden/dense: one TP shard of one weight under another name.
BROKEN_FILE = "iter_0001000/mp_rank_01_000/model_optim_rng.pt"
BROKEN_KEY = "decoder.layers.0.mlp.linear_fc1.weight"
RENAMED_KEY = BROKEN_KEY + "s"


def _break(src: Path, dst: Path) -> Path:
    """A copy of the checkpoint ``src`` whose rank file BROKEN_FILE holds BROKEN_KEY as RENAMED_KEY."""
    shutil.copytree(src, dst)
    path = dst / BROKEN_FILE
    state = torch.load(path, map_location="cpu", weights_only=False)
    state["model"][RENAMED_KEY] = state["model"].pop(BROKEN_KEY)
    torch.save(state, path)
    return dst


@pytest.fixture(scope="module")
def judged(mcore_set, mcore_forward_args, tmp_path_factory):
    """megatron-core's forward of every checkpoint here, in one command: ``{id: (logits file, logits)}``."""
    root = tmp_path_factory.mktemp("golden-judged")
    own_eval = root / "eval_ids.json"
    sequences = [{"name": f"seq_{i}", "input_ids": list(s)} for i, s in enumerate(EVAL_IDS)]
    own_eval.write_text(json.dumps({"sequences": sequences}))
    requests = {name: (GOLDEN / name / "checkpoint", GOLDEN / name / "golden" / "eval_set.json") for name in RELEASES}
    requests["dense-broken"] = (_break(GOLDEN / "dense" / "checkpoint", root / "broken"), requests["dense"][1])
    requests |= {f"{case}-{fmt}": (mcore_set / case / fmt, own_eval) for case, fmt in OWN}
    outs = {key: root / f"{key}.safetensors" for key in requests}
    logits = mcore_forward_args([(ckpt, ev, outs[key], None) for key, (ckpt, ev) in requests.items()])
    return {key: (outs[key], got) for key, got in zip(requests, logits, strict=True)}


def _report(path: Path) -> dict[str, object]:
    """The metadata of a forward-args logits file, JSON-decoded."""
    with safe_open(path, "pt") as f:
        return {k: json.loads(v) for k, v in (f.metadata() or {}).items()}


def assert_loaded_strictly(path: Path, what: str) -> None:
    """megatron-core's load of the checkpoint behind ``path`` missed no key and found none unknown."""
    __tracebackhide__ = True
    report = _report(path)
    missing, unexpected = report["missing_keys"], report["unexpected_keys"]
    if missing or unexpected:
        first = (missing or unexpected)[0]  # type: ignore[index]
        pytest.fail(
            f"{what}: megatron-core's strict load found missing keys {missing} and unexpected keys {unexpected}, "
            f"expected none [checkpoint:{first}]. Fix: write the rank files with the names and shapes of "
            "megatron-core's state_dict_for_save_checkpoint for the model the recorded args build",
            pytrace=False,
        )


def assert_logits_match(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], what: str) -> float:
    """Every sequence's logits within TOLERANCE of the expected ones, same top-1; the worst |diff|."""
    __tracebackhide__ = True
    if set(got) != set(want):
        pytest.fail(f"{what}: logits for {sorted(got)}, expected {sorted(want)}", pytrace=False)
    stats = [compare_logits(name, got[name], want[name], TOLERANCE) for name in sorted(want)]
    if not all(s.within for s in stats):
        pytest.fail(
            f"{what}: megatron-core's logits leave the float32 parity tolerance ({TOLERANCE.describe()}) "
            f"[golden/expected_logits.safetensors]\n{format_table(stats)}\nFix: the converter wrote "
            "weights megatron-core computes another function from (split order, padding, args)",
            pytrace=False,
        )
    return max(s.max_abs for s in stats)


@pytest.mark.parametrize("release", RELEASES)
def test_megatron_core_loads_the_training_checkpoint_strictly(release, judged):
    """The shipped checkpoint has exactly the keys (and shapes) of the model its args describe."""
    assert_loaded_strictly(judged[release][0], f"golden/{release}/checkpoint")


@pytest.mark.parametrize("release", RELEASES)
def test_megatron_core_gives_the_expected_logits(release, judged):
    """megatron-core's forward of the checkpoint is the release's expected logits (float32 parity)."""
    want = {k: v for k, v in _load(GOLDEN / release / "golden" / "expected_logits.safetensors").items()}
    assert_logits_match(judged[release][1], want, f"golden/{release}/checkpoint")


@pytest.mark.parametrize("release", RELEASES)
def test_the_model_is_built_from_the_checkpoints_args(release, judged):
    """The args came from the checkpoint's rank file, and bf16 weights were evaluated in float32."""
    report = _report(judged[release][0])
    dtype = json.loads((GOLDEN / release / "checkpoint" / "iter_0001000" / "arguments.json").read_text())
    assert str(report["args"]).startswith("iter_0001000/mp_rank_00_000"), report["args"]
    assert (report["weights"], report["forward"]) == (dtype["params_dtype"], "float32"), report


@pytest.mark.parametrize(("case", "fmt"), OWN, ids=[f"{c}-{f}" for c, f in OWN])
def test_forward_args_reproduces_megatron_cores_own_logits(case, fmt, judged, mcore_set):
    """Read through its own recorded args, a checkpoint megatron-core wrote gives its recorded logits."""
    path, got = judged[f"{case}-{fmt}"]
    assert_loaded_strictly(path, f"{case}/{fmt}")
    want = _load(mcore_set / case / "logits.safetensors")
    diff = {k: float((got[k] - want[k]).abs().max()) for k in want}
    assert set(got) == set(want) and max(diff.values()) <= 1e-6, f"{case}/{fmt}: max |logit difference| {diff}"


def test_a_renamed_key_fails_the_strict_load_check_naming_it(judged):
    """Meta-test: the strict-load check fails on the broken copy, naming the missing and the unknown key."""
    with pytest.raises(pytest.fail.Exception, match=rf"missing keys \['model\.{BROKEN_KEY}'\] and unexpected keys"):
        assert_loaded_strictly(judged["dense-broken"][0], "golden/dense broken")
    assert _report(judged["dense-broken"][0])["unexpected_keys"] == [f"model.{RENAMED_KEY}"]


def test_a_renamed_key_fails_the_logits_check(judged):
    """Meta-test: with that weight left at megatron's initialisation the logits check fails."""
    want = _load(GOLDEN / "dense" / "golden" / "expected_logits.safetensors")
    with pytest.raises(pytest.fail.Exception, match="leave the float32 parity tolerance"):
        assert_logits_match(judged["dense-broken"][1], want, "golden/dense broken")


def _load(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path)
