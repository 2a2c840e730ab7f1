"""Checkpoints in legacy, Transformer Engine and chapter layouts merge to the same model."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

from vla_reference import ShardMismatchError, merge, open_source, reshard
from vla_reference.hf import HFSource
from vla_reference.parity import reference_logits, sharded_logits

from builders import assert_same, gpt2, hf_tensors, llama, moe, write_model

# Hand-written expectations of Megatron's legacy names (not derived from the converter's table).
LEGACY_LAYER = {
    "input_layernorm": "input_norm",
    "self_attention.linear_qkv": "self_attention.query_key_value",
    "self_attention.linear_proj": "self_attention.dense",
    "pre_mlp_layernorm": "post_attention_norm",
    "mlp.linear_fc1": "mlp.dense_h_to_4h",
    "mlp.linear_fc2": "mlp.dense_4h_to_h",
}


def to_legacy(model: dict, *, tied_last_stage: bool, old_names: bool) -> dict:
    lm: dict = {"embedding": {}, "encoder": {}}
    out: dict = {"language_model": lm}
    for key, t in model.items():
        if key.endswith("._extra_state"):
            continue  # megatron-core's; the legacy model classes kept none
        if key == "embedding.word_embeddings.weight":
            lm["embedding"]["word_embeddings"] = {"weight": t}
        elif key == "embedding.position_embeddings.weight":
            lm["embedding"]["position_embeddings"] = {"weight": t}
        elif key.startswith("decoder.final_layernorm."):
            leaf = key.rsplit(".", 1)[1]
            lm["encoder"][("final_layernorm." if old_names else "final_norm.") + leaf] = t
        elif key == "output_layer.weight":
            if tied_last_stage:
                out["word_embeddings_for_head"] = {"weight": t}
            else:
                lm["output_layer"] = {"weight": t}
        else:
            m = re.match(r"decoder\.layers\.(\d+)\.(.+)\.(weight|bias)$", key)
            assert m, key
            name = LEGACY_LAYER[m.group(2)]
            if old_names:
                name = name.replace("input_norm", "input_layernorm").replace(
                    "post_attention_norm", "post_attention_layernorm"
                )
            lm["encoder"][f"layers.{m.group(1)}.{name}.{m.group(3)}"] = t
    if not lm["embedding"]:
        del lm["embedding"]
    return out


def to_te(model: dict) -> dict:
    out = {}
    for key, t in model.items():
        key = key.replace("input_layernorm.", "self_attention.linear_qkv.layer_norm_")
        if ".mlp.experts." not in key and ".mlp.router" not in key:
            key = key.replace("pre_mlp_layernorm.", "mlp.linear_fc1.layer_norm_")
        key = re.sub(r"mlp\.experts\.local_experts\.(\d+)\.(linear_fc\d)\.weight", r"mlp.experts.\2.weight\1", key)
        out[key] = t
        if key.endswith(".weight") and ("linear_" in key or "output_layer" in key):
            out[key.rsplit(".", 1)[0] + "._extra_state"] = torch.empty(0, dtype=torch.uint8)
    return out


def rewrite_all(root, edit):
    for f in sorted(root.glob("release/*/model_optim_rng.pt")):
        state = torch.load(f, weights_only=True)
        edit(f.parent.name, state)
        torch.save(state, f)


@pytest.mark.parametrize("old_names", [False, True], ids=["current", "pre-2023-names"])
@pytest.mark.parametrize("arch", [gpt2(), llama(tied=False)], ids=["gpt2-tied", "llama-untied"])
def test_legacy_nested_checkpoint(tmp_path, arch, old_names):
    write_model(arch, tmp_path / "hf")
    reshard(tmp_path / "hf", tmp_path / "ckpt", tp=2, pp=2, fsync=False)

    def edit(name, state):
        state["model"] = to_legacy(state["model"], tied_last_stage=arch.tied, old_names=old_names)

    rewrite_all(tmp_path / "ckpt", edit)
    merge(tmp_path / "ckpt", tmp_path / "back", fsync=False)
    assert_same(hf_tensors(tmp_path / "hf"), hf_tensors(tmp_path / "back"))


@pytest.mark.parametrize("arch", [llama(), moe(every=2)], ids=["dense", "moe-grouped-gemm"])
def test_transformer_engine_names(tmp_path, arch):
    write_model(arch, tmp_path / "hf")
    reshard(tmp_path / "hf", tmp_path / "ckpt", tp=2, pp=2, ep=2 if arch.num_experts else 1, fsync=False)
    rewrite_all(tmp_path / "ckpt", lambda name, s: s.__setitem__("model", to_te(s["model"])))
    merge(tmp_path / "ckpt", tmp_path / "back", fsync=False)
    assert_same(hf_tensors(tmp_path / "hf"), hf_tensors(tmp_path / "back"))


def test_chapter_layout_pp_dirs_and_tracker_inside_iteration(tmp_path):
    write_model(llama(), tmp_path / "hf")
    reshard(tmp_path / "hf", tmp_path / "ckpt", tp=2, pp=2, iteration=10000, fsync=False)
    it = tmp_path / "ckpt/iter_0010000"
    for d in sorted(it.glob("mp_rank_*")):
        tp, pp = d.name.split("_")[2:]
        (it / f"pp_rank_{pp}").mkdir(exist_ok=True)
        d.rename(it / f"pp_rank_{pp}" / f"mp_rank_{tp}")
    (tmp_path / "ckpt/latest_checkpointed_iteration.txt").rename(it / "latest_checkpointed_iteration.txt")
    merge(tmp_path / "ckpt", tmp_path / "back", fsync=False)
    assert_same(hf_tensors(tmp_path / "hf"), hf_tensors(tmp_path / "back"))


def test_virtual_pipeline_chunks(tmp_path):
    write_model(llama(), tmp_path / "hf")
    reshard(tmp_path / "hf", tmp_path / "flat", tp=1, pp=1, fsync=False)
    state = torch.load(tmp_path / "flat/release/mp_rank_00/model_optim_rng.pt", weights_only=True)
    model = state["model"]

    def chunk(layer, extra):
        out = {
            k.replace(f"decoder.layers.{layer}.", "decoder.layers.0."): v
            for k, v in model.items()
            if k.startswith(f"decoder.layers.{layer}.")
        }
        out.update({k: v for k, v in model.items() if k.startswith(extra)} if extra else {})
        return out

    # PP=2, VPP=2, 4 layers: stage p, chunk v holds global layer v*PP + p
    stages = {
        0: (chunk(0, "embedding."), chunk(2, None)),
        1: (
            chunk(1, None),
            {**chunk(3, None), **{k: v for k, v in model.items() if k.startswith(("decoder.final", "output_layer"))}},
        ),
    }
    args = dict(state["args"], pipeline_model_parallel_size=2, virtual_pipeline_model_parallel_size=2)
    root = tmp_path / "vpp"
    for pp, (m0, m1) in stages.items():
        d = root / "release" / f"mp_rank_00_{pp:03d}"
        d.mkdir(parents=True)
        torch.save(
            {"model0": m0, "model1": m1, "args": args, "checkpoint_version": 3.0, "iteration": 0},
            d / "model_optim_rng.pt",
        )
    (root / "latest_checkpointed_iteration.txt").write_text("release")
    merge(root, tmp_path / "back", fsync=False)
    assert_same(hf_tensors(tmp_path / "hf"), hf_tensors(tmp_path / "back"))


def test_ep_only_rank_names_need_the_args(tmp_path):
    """mp_rank_TT_EEE (PP=1, EP>1) reads like mp_rank_TT_PPP; the args disambiguate."""
    write_model(moe(num_layers=2), tmp_path / "hf")
    reshard(tmp_path / "hf", tmp_path / "ckpt", tp=2, pp=1, ep=2, fsync=False)
    assert sorted(p.name for p in (tmp_path / "ckpt/release").glob("mp_rank_*")) == [
        "mp_rank_00_000",
        "mp_rank_00_001",
        "mp_rank_01_000",
        "mp_rank_01_001",
    ]
    args = json.loads((tmp_path / "ckpt/release/arguments.json").read_text())
    assert args["expert_model_parallel_size"] == 2 and args["pipeline_model_parallel_size"] == 1
    merge(tmp_path / "ckpt", tmp_path / "back", fsync=False)
    assert_same(hf_tensors(tmp_path / "hf"), hf_tensors(tmp_path / "back"))
    shutil.rmtree(tmp_path / "back")


def set_expert_tp(root, etp, experts_from=None):
    """Record expert_tensor_parallel_size; with ``experts_from`` (the same model at TP=1), every
    TP rank holds its EP rank's experts whole, as Megatron saves them with ETP=1."""

    def edit(name, state):
        state["args"]["expert_tensor_parallel_size"] = etp
        if experts_from is not None:
            ep = name.rsplit("_", 1)[1]
            whole = torch.load(experts_from / f"release/mp_rank_00_{ep}/model_optim_rng.pt", weights_only=True)
            for key in [k for k in state["model"] if ".mlp.experts." in k]:
                state["model"][key] = whole["model"][key]

    rewrite_all(root, edit)
    args = json.loads((root / "release/arguments.json").read_text())
    args["expert_tensor_parallel_size"] = etp
    (root / "release/arguments.json").write_text(json.dumps(args))


def test_experts_not_split_over_tp(tmp_path):
    """ETP=1: the dense layers split over TP=2, every TP rank holding its experts whole."""
    write_model(moe(num_layers=2), tmp_path / "hf")
    reshard(tmp_path / "hf", tmp_path / "ckpt", tp=2, ep=2, fsync=False)
    reshard(tmp_path / "hf", tmp_path / "tp1", tp=1, ep=2, fsync=False)
    set_expert_tp(tmp_path / "ckpt", 1, experts_from=tmp_path / "tp1")
    merge(tmp_path / "ckpt", tmp_path / "back", fsync=False)
    assert_same(hf_tensors(tmp_path / "hf"), hf_tensors(tmp_path / "back"))


def test_other_expert_tp_sizes_are_refused_naming_the_argument(tmp_path):
    from vla_reference import UnsupportedModelError

    write_model(moe(num_layers=2), tmp_path / "hf")
    reshard(tmp_path / "hf", tmp_path / "ckpt", tp=2, ep=2, fsync=False)
    set_expert_tp(tmp_path / "ckpt", 4)
    with pytest.raises(
        UnsupportedModelError, match=r"expert_tensor_parallel_size 4 with TP=2.*:expert_tensor_parallel_size\]"
    ):
        merge(tmp_path / "ckpt", tmp_path / "back", fsync=False)
    assert not (tmp_path / "back").exists()


def to_qkv_order(t: torch.Tensor, version: float, heads: int, head_dim: int) -> torch.Tensor:
    """A rank's fused QKV rows, from today's [np, 3, hn] into Megatron's pre-2.0 orders:
    0 -> [3, np, hn], 1.0 -> [np, hn, 3] (see fix_query_key_value_ordering)."""
    rest = t.shape[1:]
    grid = t.reshape(heads, 3, head_dim, *rest)
    grid = grid.transpose(0, 1) if version == 0 else grid.transpose(1, 2)
    return grid.contiguous().reshape(t.shape)


@pytest.mark.parametrize("version", [0, 1.0], ids=["v0", "v1.0"])
@pytest.mark.parametrize("tp", [1, 2, 4])
def test_pre_2_0_qkv_orders(tmp_path, version, tp):
    """Checkpoints saved before checkpoint_version 2.0 hold fused QKV in another row order;
    merged, they give the same model (GPT-2 style: QKV weight and bias)."""
    arch = gpt2()
    write_model(arch, tmp_path / "hf")
    reshard(tmp_path / "hf", tmp_path / "ckpt", tp=tp, fsync=False)
    heads = arch.num_attention_heads // tp

    def edit(name, state):
        model = to_legacy(state["model"], tied_last_stage=False, old_names=True)
        encoder = model["language_model"]["encoder"]
        for key in [k for k in encoder if ".query_key_value." in k]:
            encoder[key] = to_qkv_order(encoder[key], version, heads, arch.kv_channels)
        state["model"], state["checkpoint_version"] = model, version

    rewrite_all(tmp_path / "ckpt", edit)
    merge(tmp_path / "ckpt", tmp_path / "back", fsync=False)
    assert_same(hf_tensors(tmp_path / "hf"), hf_tensors(tmp_path / "back"))
    reshard(tmp_path / "ckpt", tmp_path / "again", tp=2, fsync=False)  # Megatron -> Megatron, today's order
    merge(tmp_path / "again", tmp_path / "back2", fsync=False)
    assert_same(hf_tensors(tmp_path / "hf"), hf_tensors(tmp_path / "back2"))


@pytest.mark.parametrize(
    "arch, version, message",
    [
        (llama(), 1.0, r"checkpoint_version 1.0 predates grouped-query attention"),
        (gpt2(), 1.5, r"checkpoint_version 1.5 is none Megatron wrote"),
    ],
    ids=["gqa-before-2.0", "unknown-version"],
)
def test_pre_2_0_checkpoints_that_cannot_be_read_are_refused(tmp_path, arch, version, message):
    from vla_reference import LayoutError

    write_model(arch, tmp_path / "hf")
    reshard(tmp_path / "hf", tmp_path / "ckpt", tp=2, fsync=False)
    rewrite_all(tmp_path / "ckpt", lambda name, s: s.__setitem__("checkpoint_version", version))
    with pytest.raises(LayoutError, match=message + r".*mp_rank_00.*:checkpoint_version\]"):
        merge(tmp_path / "ckpt", tmp_path / "back", fsync=False)
    assert not (tmp_path / "back").exists()


def to_grouped(model: dict, n_local: int) -> dict:
    """Megatron's GroupedMLP: a layer's local experts as weight1 [hidden, n * fc1_rows] and
    weight2 [n * fc2_cols, hidden], laid out so that weight1.view(n, hidden, -1)[j] is expert
    j's fc1 transposed (hand-written from GroupedMLP.forward, not from the converter)."""
    out = {k: t for k, t in model.items() if ".mlp.experts.local_experts." not in k}
    layers = sorted({int(m.group(1)) for k in model if (m := re.match(r"decoder\.layers\.(\d+)\.mlp\.experts\.", k))})
    for layer in layers:
        p = f"decoder.layers.{layer}.mlp.experts."
        fc1 = [model[f"{p}local_experts.{j}.linear_fc1.weight"] for j in range(n_local)]
        fc2 = [model[f"{p}local_experts.{j}.linear_fc2.weight"] for j in range(n_local)]
        hidden = fc1[0].shape[1]
        out[p + "weight1"] = torch.stack([w.t().contiguous() for w in fc1]).view(hidden, -1)
        out[p + "weight2"] = torch.stack([w.t().contiguous() for w in fc2]).view(-1, hidden)
    return out


@pytest.mark.parametrize(("tp", "ep"), [(2, 2), (1, 1), (2, 1)])
def test_grouped_gemm_experts(tmp_path, tp, ep):
    """--moe-grouped-gemm without Transformer Engine's per-expert weights (GroupedMLP) merges to
    the same model as per-expert weights, and the sharded forward reads it too."""
    arch = moe(every=2)
    write_model(arch, tmp_path / "hf")
    reshard(tmp_path / "hf", tmp_path / "ckpt", tp=tp, pp=2, ep=ep, fsync=False)
    n_local = arch.num_experts // ep
    rewrite_all(tmp_path / "ckpt", lambda _, state: state.update(model=to_grouped(state["model"], n_local)))
    state = torch.load(next((tmp_path / "ckpt").glob("release/*_000*/model_optim_rng.pt")), weights_only=True)
    assert "decoder.layers.0.mlp.experts.weight1" in state["model"]
    assert not [k for k in state["model"] if "local_experts" in k]
    merge(tmp_path / "ckpt", tmp_path / "back", fsync=False)
    assert_same(hf_tensors(tmp_path / "hf"), hf_tensors(tmp_path / "back"))
    if (tp, ep) == (2, 2):
        got = sharded_logits(open_source(tmp_path / "ckpt"), [[1, 2, 3, 4]])[0]
        hf = HFSource(tmp_path / "hf")
        want = reference_logits(arch, lambda k: hf.get(k).tensor(), torch.tensor([[1, 2, 3, 4]]))[0]
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)


def test_grouped_gemm_weights_that_do_not_split_name_the_key(tmp_path):
    write_model(moe(every=2), tmp_path / "hf")
    reshard(tmp_path / "hf", tmp_path / "ckpt", tp=1, pp=1, ep=1, fsync=False)

    def edit(_, state):
        model = to_grouped(state["model"], 4)
        w = model["decoder.layers.2.mlp.experts.weight2"]
        model["decoder.layers.2.mlp.experts.weight2"] = w[:-1].clone()  # one row short of 4 experts' blocks
        state["model"] = model

    rewrite_all(tmp_path / "ckpt", edit)
    with pytest.raises(ShardMismatchError, match=r"do not split into 4 local experts") as e:
        merge(tmp_path / "ckpt", tmp_path / "out")
    assert e.value.key == "decoder.layers.2.mlp.experts.weight2" and "model_optim_rng.pt" in str(e.value)
