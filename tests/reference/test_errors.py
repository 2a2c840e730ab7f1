"""Bad inputs give one clear error naming the file and key; nothing half-written is left."""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import struct
import sys
import types
import zipfile

import pytest
import torch

from vla_reference import (
    LayoutError,
    MalformedFileError,
    ShardMismatchError,
    UnsafeCheckpointError,
    UnsupportedModelError,
    merge,
    reshard,
)

from builders import gpt2, llama, moe, write_model


@pytest.fixture
def ckpt(tmp_path):
    write_model(llama(), tmp_path / "hf")
    reshard(tmp_path / "hf", tmp_path / "ckpt", tp=2, pp=2, fsync=False)
    return tmp_path / "ckpt"


def rank_file(ckpt, name="mp_rank_01_001"):
    return ckpt / "release" / name / "model_optim_rng.pt"


def rewrite(path, edit):
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)


def assert_nothing_written(dst):
    assert not dst.exists()
    assert not [p for p in dst.parent.iterdir() if p.name.startswith(f".{dst.name}.tmp")]


def hf_with_config(tmp_path, arch, edit):
    """A Hugging Face directory of ``arch`` at tmp_path/hf whose config.json ``edit`` changed in place."""
    write_model(arch, tmp_path / "hf")
    path = tmp_path / "hf/config.json"
    cfg = json.loads(path.read_text())
    edit(cfg)
    path.write_text(json.dumps(cfg))
    return tmp_path / "hf"


def assert_reshard_refuses(tmp_path, error, key):
    """Resharding tmp_path/hf raises one ``error`` naming config.json and ``key``, writing nothing."""
    with pytest.raises(error) as e:
        reshard(tmp_path / "hf", tmp_path / "out", tp=1, pp=1)
    assert e.value.key == key and "config.json" in str(e.value)
    assert_nothing_written(tmp_path / "out")


def test_missing_rank_names_it(ckpt, tmp_path):
    shutil.rmtree(ckpt / "release/mp_rank_01_001")
    with pytest.raises(LayoutError, match=r"missing rank directories mp_rank_01_001 for TP=2 PP=2"):
        merge(ckpt, tmp_path / "out")
    assert_nothing_written(tmp_path / "out")


def test_extra_rank_names_it(ckpt, tmp_path):
    shutil.copytree(ckpt / "release/mp_rank_01_001", ckpt / "release/mp_rank_02_001")
    with pytest.raises(LayoutError, match=r"unexpected rank directories mp_rank_02_001"):
        merge(ckpt, tmp_path / "out")


def test_truncated_file_names_it(ckpt, tmp_path):
    f = rank_file(ckpt)
    f.write_bytes(f.read_bytes()[:4000])
    with pytest.raises(MalformedFileError, match=r"mp_rank_01_001/model_optim_rng.pt"):
        merge(ckpt, tmp_path / "out")
    assert_nothing_written(tmp_path / "out")


def test_zip_end_record_naming_several_disks_names_the_file(ckpt, tmp_path):
    # zipfile.is_zipfile raises BadZipFile itself on such a ZIP64 locator instead of saying no
    f = rank_file(ckpt)
    data = bytearray(f.read_bytes())
    end = data.rindex(b"PK\x05\x06")
    data[end - 20 : end] = struct.pack("<4sIQI", b"PK\x06\x07", 0, 0, 2)
    f.write_bytes(bytes(data))
    with pytest.raises(zipfile.BadZipFile, match="multiple disks"):
        zipfile.is_zipfile(f)  # the input this test is about
    with pytest.raises(MalformedFileError, match=r"mp_rank_01_001/model_optim_rng.pt"):
        merge(ckpt, tmp_path / "out")
    assert_nothing_written(tmp_path / "out")


class Boom:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickle_that_runs_code_is_refused_unexecuted(ckpt, tmp_path, capsys):
    f = rank_file(ckpt)
    state = torch.load(f, weights_only=True)
    state["payload"] = Boom()
    torch.save(state, f)
    with pytest.raises(UnsafeCheckpointError, match=r"would call builtins.print.*mp_rank_01_001"):
        merge(ckpt, tmp_path / "out")
    assert "this must never run" not in capsys.readouterr().out


def test_unknown_key_names_file_and_key(ckpt, tmp_path):
    rewrite(rank_file(ckpt), lambda s: s["model"].__setitem__("decoder.layers.0.mystery.weight", torch.zeros(2)))
    with pytest.raises(LayoutError, match=r"unknown key.*mp_rank_01_001/model_optim_rng.pt:decoder.layers.0.mystery"):
        merge(ckpt, tmp_path / "out")


def test_shape_contradicting_args(ckpt, tmp_path):
    key = "decoder.layers.0.mlp.linear_fc2.weight"
    rewrite(rank_file(ckpt), lambda s: s["model"].__setitem__(key, torch.zeros(32, 16)))
    with pytest.raises(ShardMismatchError, match=r"mp_rank_01_001/model_optim_rng.pt:decoder.layers.0.mlp.linear_fc2"):
        merge(ckpt, tmp_path / "out")
    assert_nothing_written(tmp_path / "out")


def test_replicated_norm_differing_on_one_rank(ckpt, tmp_path):
    key = "decoder.layers.1.input_layernorm.weight"
    rewrite(rank_file(ckpt), lambda s: s["model"][key].add_(1.0))
    with pytest.raises(ShardMismatchError, match=r"replicated tensor differs between .*mp_rank_00_001.*mp_rank_01_001"):
        merge(ckpt, tmp_path / "out")


def test_tied_head_copy_must_match(tmp_path):
    write_model(llama(tied=True), tmp_path / "hf")
    reshard(tmp_path / "hf", tmp_path / "ckpt", tp=1, pp=2, fsync=False)
    rewrite(
        tmp_path / "ckpt/release/mp_rank_00_001/model_optim_rng.pt", lambda s: s["model"]["output_layer.weight"].mul_(2)
    )
    with pytest.raises(ShardMismatchError, match=r"copy of the tied embedding differs.*output_layer.weight"):
        merge(tmp_path / "ckpt", tmp_path / "out")


def test_args_mismatching_shards(ckpt, tmp_path):
    for f in (ckpt / "release").glob("*/model_optim_rng.pt"):
        rewrite(f, lambda s: s["args"].__setitem__("add_bias_linear", True))
    pattern = r"do not match the recorded arguments: missing .*linear_qkv.bias.*Fix: check add_bias_linear"
    with pytest.raises(LayoutError, match=pattern):
        merge(ckpt, tmp_path / "out")


def _fake_megatron_enum(monkeypatch, tmp_path):
    """Pickle an args Namespace holding a Megatron enum, as recent Megatron does."""
    import enum

    mod = types.ModuleType("megatron.core.transformer.enums")

    class AttnBackend(enum.Enum):
        auto = 5

    AttnBackend.__module__ = mod.__name__
    AttnBackend.__qualname__ = "AttnBackend"
    mod.AttnBackend = AttnBackend
    for name in ("megatron", "megatron.core", "megatron.core.transformer"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    return AttnBackend


def test_args_with_a_foreign_type_outside_the_hyperparameters_are_used_without_it(ckpt, tmp_path, monkeypatch, caplog):
    """Recent Megatron records attention_backend, an enum of its own, in every checkpoint: the
    args are used without that field, quietly (every real checkpoint has it)."""
    enum_cls = _fake_megatron_enum(monkeypatch, tmp_path)
    for f in (ckpt / "release").glob("*/model_optim_rng.pt"):
        rewrite(f, lambda s: s.__setitem__("args", argparse.Namespace(**s["args"], attention_backend=enum_cls.auto)))
    monkeypatch.delitem(sys.modules, "megatron.core.transformer.enums")  # the reader has no Megatron installed
    (ckpt / "release/arguments.json").unlink()
    with caplog.at_level(logging.INFO, logger="vla_reference.megatron"):
        merge(ckpt, tmp_path / "out", fsync=False)
    assert "AttnBackend) in attention_backend; those fields are not hyperparameters, ignoring them" in caplog.text
    assert not [
        r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("vla_reference.megatron")
    ]


def test_args_with_a_foreign_type_in_a_hyperparameter_fall_back_to_arguments_json(ckpt, tmp_path, monkeypatch, caplog):
    enum_cls = _fake_megatron_enum(monkeypatch, tmp_path)
    for f in (ckpt / "release").glob("*/model_optim_rng.pt"):
        rewrite(f, lambda s: s.__setitem__("args", argparse.Namespace(**{**s["args"], "normalization": enum_cls.auto})))
    monkeypatch.delitem(sys.modules, "megatron.core.transformer.enums")
    merge(ckpt, tmp_path / "out", fsync=False)
    assert "AttnBackend) in normalization (needed: normalization); using" in caplog.text
    assert "arguments.json" in caplog.text


def test_foreign_type_in_a_hyperparameter_without_arguments_json(ckpt, tmp_path, monkeypatch):
    enum_cls = _fake_megatron_enum(monkeypatch, tmp_path)
    for f in (ckpt / "release").glob("*/model_optim_rng.pt"):
        rewrite(f, lambda s: s.__setitem__("args", argparse.Namespace(**{**s["args"], "normalization": enum_cls.auto})))
    monkeypatch.delitem(sys.modules, "megatron.core.transformer.enums")
    (ckpt / "release/arguments.json").unlink()
    with pytest.raises(
        LayoutError, match=r"AttnBackend\) in normalization \(needed: normalization\).*no arguments.json"
    ):
        merge(ckpt, tmp_path / "out")
    assert_nothing_written(tmp_path / "out")


def test_destination_not_clobbered(ckpt, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out/keep.txt").write_text("mine")
    with pytest.raises(Exception, match="destination exists"):
        merge(ckpt, tmp_path / "out")
    assert (tmp_path / "out/keep.txt").read_text() == "mine"


def test_source_is_never_written(ckpt, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in ckpt.rglob("*")}
    merge(ckpt, tmp_path / "out", fsync=False)
    assert {p: p.stat().st_mtime_ns for p in ckpt.rglob("*")} == before


def test_invalid_target_layout(tmp_path):
    write_model(moe(), tmp_path / "hf")
    with pytest.raises(LayoutError, match=r"4 experts do not split over EP=3"):
        reshard(tmp_path / "hf", tmp_path / "out", tp=1, pp=1, ep=3)
    with pytest.raises(LayoutError, match=r"4 layers do not split evenly over PP=3"):
        reshard(tmp_path / "hf", tmp_path / "out", tp=1, pp=3)
    assert_nothing_written(tmp_path / "out")


def test_model_without_stock_class(tmp_path):
    from vla_reference import write_hf
    from vla_reference.converter import DictSource, random_weights

    arch = llama(qk_layernorm=True, add_bias_linear=True)  # Qwen3 has qk norms but no MLP biases
    with pytest.raises(
        UnsupportedModelError, match=r"no stock transformers class.*Qwen3ForCausalLM: linear biases"
    ) as e:
        write_hf(DictSource(arch, random_weights(arch)), tmp_path / "out")
    assert "LlamaForCausalLM: qk_layernorm" in str(e.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("arch", "edit", "key"),
    [
        (lambda: llama(add_qkv_bias=True), {"use_sliding_window": True}, "use_sliding_window"),
        (lambda: llama(qk_layernorm=True), {"attention_bias": True}, "attention_bias"),
        (lambda: moe(qk_layernorm=True), {"norm_topk_prob": False}, "norm_topk_prob"),
        (lambda: moe(every=1), {"sliding_window": 4096}, "sliding_window"),
        # absent, MistralConfig's default window (4096) applies
        (llama, {"architectures": ["MistralForCausalLM"], "model_type": "mistral"}, "sliding_window"),
        (gpt2, {"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
        (gpt2, {"scale_attn_weights": False}, "scale_attn_weights"),
    ],
    ids=[
        "qwen2-sliding-window",
        "qwen3-attention-bias",
        "qwen3-moe-unnormalised-top-k",
        "mixtral-sliding-window",
        "mistral-default-window",
        "gpt2-inverse-layer-scaling",
        "gpt2-unscaled-attention",
    ],
)
def test_config_no_megatron_model_computes_names_the_key(tmp_path, arch, edit, key):
    hf_with_config(tmp_path, arch(), lambda cfg: cfg.update(edit))
    assert_reshard_refuses(tmp_path, UnsupportedModelError, key)


def test_malformed_config_json(tmp_path):
    write_model(llama(), tmp_path / "hf")
    (tmp_path / "hf/config.json").write_text("{not json")
    with pytest.raises(MalformedFileError, match=r"config.json"):
        reshard(tmp_path / "hf", tmp_path / "out", tp=1, pp=1)


@pytest.mark.parametrize(
    ("arch", "field", "value", "key"),
    [
        (llama, "num_key_value_heads", 4, "model.layers.0.self_attn.k_proj.weight"),
        (llama, "intermediate_size", 48, "model.layers.0.mlp.gate_proj.weight"),
        (gpt2, "n_inner", 48, "transformer.h.0.mlp.c_fc.weight"),  # Conv1D: [in, out]
    ],
    ids=["llama-kv-heads", "llama-ffn", "gpt2-ffn"],
)
def test_config_contradicting_the_tensors_names_file_and_key(tmp_path, arch, field, value, key):
    def edit(cfg):
        assert cfg[field] != value
        cfg[field] = value

    hf_with_config(tmp_path, arch(), edit)
    pattern = rf"shape \[.*\] contradicts config\.json, which gives \[.*model\.safetensors:{re.escape(key)}\]"
    with pytest.raises(ShardMismatchError, match=pattern):
        reshard(tmp_path / "hf", tmp_path / "out", tp=1, pp=1)
    assert_nothing_written(tmp_path / "out")


def test_truncated_safetensors(tmp_path):
    write_model(llama(), tmp_path / "hf")
    f = tmp_path / "hf/model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(MalformedFileError, match=r"model.safetensors:.*truncated or corrupt"):
        reshard(tmp_path / "hf", tmp_path / "out", tp=1, pp=1)


def test_bad_tracker(ckpt, tmp_path):
    (ckpt / "latest_checkpointed_iteration.txt").write_text("banana")
    with pytest.raises(MalformedFileError, match=r"tracker holds 'banana'"):
        merge(ckpt, tmp_path / "out")
    (ckpt / "latest_checkpointed_iteration.txt").write_text("42")
    with pytest.raises(LayoutError, match=r"iter_0000042, which does not exist"):
        merge(ckpt, tmp_path / "out")


def test_json_args_are_accepted(ckpt, tmp_path):
    args = json.loads((ckpt / "release/arguments.json").read_text())
    assert args["tensor_model_parallel_size"] == 2


def test_real_training_state_loads_without_running_anything(ckpt, tmp_path):
    """numpy RNG state, a PosixPath and a Generator (what real Megatron saves) become inert stand-ins."""
    import pathlib

    import numpy as np

    for f in (ckpt / "release").glob("*/model_optim_rng.pt"):
        state = torch.load(f, weights_only=True)
        state["rng_state"] = [{"np_rng_state": np.random.get_state(), "random_rng_state": (3, (1, 2), None)}]
        state["args"]["save"] = pathlib.PosixPath("/ckpt")
        torch.save(state, f)
    merge(ckpt, tmp_path / "out", fsync=False)
    assert (tmp_path / "out/model.safetensors").is_file()


def test_ranks_with_different_numbers_of_model_chunks(ckpt, tmp_path):
    """Virtual pipeline chunks (model0, model1, ...) must be the same on every rank."""
    path = rank_file(ckpt, "mp_rank_01_001")

    def split(state):
        model = state.pop("model")
        state["model0"], state["model1"] = model, {}

    rewrite(path, split)
    with pytest.raises(LayoutError, match=r"holds 2 model chunks but .*mp_rank_00_000.* holds 1.*\[.*mp_rank_01_001"):
        merge(ckpt, tmp_path / "out")
    assert_nothing_written(tmp_path / "out")


def _edit_args(ckpt, edit):
    for f in (ckpt / "release").glob("*/model_optim_rng.pt"):
        rewrite(f, lambda state: edit(state["args"]))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("apply_layernorm_1p", True),
        ("apply_residual_connection_post_layernorm", True),
        ("window_size", [4096, 0]),
        ("moe_router_topk_scaling_factor", 2.5),
        ("moe_router_enable_expert_bias", True),
        ("multi_latent_attention", True),
    ],
)
def test_args_no_stock_class_reproduces_are_refused_naming_them(ckpt, tmp_path, name, value):
    _edit_args(ckpt, lambda args: args.update({name: value}))
    with pytest.raises(UnsupportedModelError, match=rf"{name}=.*no stock transformers class reproduces") as e:
        merge(ckpt, tmp_path / "out")
    assert e.value.key == name and "model_optim_rng.pt" in str(e.value)
    assert_nothing_written(tmp_path / "out")


def test_args_at_their_neutral_values_merge(ckpt, tmp_path):
    """What Megatron records with these features off is not a reason to refuse."""
    neutral = {
        "apply_layernorm_1p": False,
        "window_size": None,
        "moe_router_topk_scaling_factor": None,
        "moe_router_num_groups": None,
        "softmax_scale": None,
    }
    _edit_args(ckpt, lambda args: args.update(neutral))
    merge(ckpt, tmp_path / "out", fsync=False)
    _edit_args(ckpt, lambda args: args.update(window_size=[-1, -1], moe_router_topk_scaling_factor=1.0))
    merge(ckpt, tmp_path / "out2", fsync=False)
    assert (tmp_path / "out/model.safetensors").read_bytes() == (tmp_path / "out2/model.safetensors").read_bytes()


def test_rotary_flag_of_older_megatron_means_rope(ckpt, tmp_path):
    """Before --position-embedding-type, Megatron recorded use_rotary_position_embeddings."""

    def edit(args):
        del args["position_embedding_type"]
        args["use_rotary_position_embeddings"] = True

    _edit_args(ckpt, edit)
    merge(ckpt, tmp_path / "out", fsync=False)
    config = json.loads((tmp_path / "out/config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]


@pytest.mark.parametrize(
    ("rope", "args"),
    [
        (
            {
                "rope_type": "llama3",
                "factor": 32.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
                "rope_theta": 5e5,
            },
            {"use_rope_scaling": True, "rope_scaling_factor": 32.0, "rotary_base": 5e5},
        ),
        ({"type": "linear", "factor": 2.0}, {"rotary_seq_len_interpolation_factor": 2.0}),
    ],
    ids=["llama3", "linear-as-transformers-4-wrote-it"],
)
def test_rope_scaling_of_a_hub_config_reaches_the_args(tmp_path, rope, args):
    """transformers 4 wrote rope_scaling beside rope_theta; 5 writes rope_parameters."""

    def edit(cfg):
        del cfg["rope_parameters"]
        cfg["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
        cfg["rope_theta"] = rope.get("rope_theta", 1e4)

    hf_with_config(tmp_path, llama(), edit)
    reshard(tmp_path / "hf", tmp_path / "ckpt", tp=1, pp=1, fsync=False)
    written = json.loads((tmp_path / "ckpt/release/arguments.json").read_text())
    assert {k: written.get(k) for k in args} == args


@pytest.mark.parametrize(
    "rope",
    [
        {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4},
        {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 2.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
            "rope_theta": 1e4,
        },
    ],
    ids=["yarn", "llama3-other-than-megatron-fixes"],
)
def test_rope_megatron_cannot_express_is_refused(tmp_path, rope):
    hf_with_config(tmp_path, llama(), lambda cfg: cfg.update(rope_parameters=rope))
    assert_reshard_refuses(tmp_path, UnsupportedModelError, "rope_parameters")


def test_query_groups_default_without_the_gqa_flag_is_multi_head(tmp_path):
    """Megatron records num_query_groups=1 (its default) when --group-query-attention is off,
    and then ignores it: the model is multi-head, not multi-query."""
    write_model(gpt2(), tmp_path / "hf")
    reshard(tmp_path / "hf", tmp_path / "ckpt", tp=2, pp=1, fsync=False)
    _edit_args(tmp_path / "ckpt", lambda args: args.update(group_query_attention=False, num_query_groups=1))
    merge(tmp_path / "ckpt", tmp_path / "out", fsync=False)
    assert (tmp_path / "out/model.safetensors").read_bytes() == (tmp_path / "hf/model.safetensors").read_bytes()


def test_an_unrecorded_gelu_fusion_is_said_naming_the_argument(tmp_path, caplog):
    """Without bias_gelu_fusion in the args the GELU is Megatron's default (the fused tanh one):
    the merge says so, naming the argument, instead of choosing silently."""
    write_model(gpt2(activation="gelu_tanh"), tmp_path / "hf")
    reshard(tmp_path / "hf", tmp_path / "ckpt", tp=1, pp=1, fsync=False)
    with caplog.at_level(logging.WARNING, logger="vla_reference.converter"):
        merge(tmp_path / "ckpt", tmp_path / "recorded", fsync=False)
    assert "is not recorded" not in caplog.text
    _edit_args(
        tmp_path / "ckpt", lambda args: [args.pop(k, None) for k in ("bias_gelu_fusion", "bias_activation_fusion")]
    )
    with caplog.at_level(logging.WARNING, logger="vla_reference.converter"):
        merge(tmp_path / "ckpt", tmp_path / "out", fsync=False)
    assert "bias_gelu_fusion is not recorded: assumed True (Megatron's default)" in caplog.text
    assert "tanh approximation" in caplog.text and "arguments.json" in caplog.text
    assert (tmp_path / "out/model.safetensors").read_bytes() == (tmp_path / "hf/model.safetensors").read_bytes()
    assert json.loads((tmp_path / "out/config.json").read_text()) == json.loads(
        (tmp_path / "recorded/config.json").read_text()
    )


@pytest.mark.parametrize(("arch", "tied"), [(llama, False), (gpt2, True)], ids=["llama-untied", "gpt2-tied"])
def test_absent_tie_word_embeddings_means_the_class_default(tmp_path, arch, tied):
    """transformers fills an absent tie_word_embeddings from the class: GPT-2 ties, the others do not."""
    hf_with_config(tmp_path, arch(tied=tied), lambda cfg: cfg.pop("tie_word_embeddings"))
    reshard(tmp_path / "hf", tmp_path / "ckpt", tp=1, pp=1, fsync=False)
    args = json.loads((tmp_path / "ckpt/release/arguments.json").read_text())
    assert args["untie_embeddings_and_output_weights"] is not tied


def test_ungated_shared_experts_are_refused(tmp_path):
    """Qwen2-MoE always scales its shared expert by a sigmoid gate: without Megatron's
    moe_shared_expert_gate no stock class computes the model."""
    from vla_reference import write_hf
    from vla_reference.converter import DictSource, random_weights

    arch = moe(moe_shared_expert_intermediate_size=24, moe_shared_expert_gate=False)
    with pytest.raises(
        UnsupportedModelError, match=r"Qwen2MoeForCausalLM: shared experts without moe_shared_expert_gate"
    ):
        write_hf(DictSource(arch, random_weights(arch)), tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("arch", "edit", "key"),
    [
        (llama, {"num_hidden_layers": "x"}, "num_hidden_layers"),
        (llama, {"hidden_size": [1, 2]}, "hidden_size"),
        (llama, {"vocab_size": float("inf")}, "vocab_size"),
        (llama, {"head_dim": 0}, "head_dim"),
        (llama, {"rms_norm_eps": -1}, "rms_norm_eps"),
        (llama, {"num_key_value_heads": 3}, "num_key_value_heads"),  # 4 heads
        (llama, {"rope_parameters": "yes"}, "rope_parameters"),
        (llama, {"rope_parameters": {"rope_type": "linear", "rope_theta": 1e4}}, "rope_parameters.factor"),
        (llama, {"rope_parameters": {"rope_type": "default", "rope_theta": "x"}}, "rope_parameters.rope_theta"),
        (llama, {"architectures": 5}, "architectures"),
        (llama, {"tie_word_embeddings": "no"}, "tie_word_embeddings"),
        (moe, {"mlp_only_layers": [9]}, "mlp_only_layers"),  # 4 layers
        (moe, {"num_experts_per_tok": 9}, "num_experts_per_tok"),  # 4 experts
        (moe, {"num_experts": 1e30}, "num_experts"),
        (gpt2, {"n_head": 64}, "n_head"),  # more heads than the width
    ],
)
def test_malformed_config_value_names_the_key(tmp_path, arch, edit, key):
    """A config.json value of the wrong type, not finite, out of range or contradicting another
    is one LayoutError naming config.json and the key, before anything is enumerated or allocated."""
    hf_with_config(tmp_path, arch(), lambda cfg: cfg.update(edit))
    assert_reshard_refuses(tmp_path, LayoutError, key)


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        ({"num_layers": float("inf")}, "num_layers"),
        ({"vocab_size": "x"}, "vocab_size"),
        ({"vocab_size": -1}, "vocab_size"),
        ({"kv_channels": 0}, "kv_channels"),
        ({"num_experts": 1e30}, "num_experts"),
        ({"group_query_attention": True, "num_query_groups": 3}, "num_query_groups"),
        ({"rotary_base": float("nan")}, "rotary_base"),
        ({"tensor_model_parallel_size": 10**9}, "tensor_model_parallel_size"),
    ],
)
def test_malformed_argument_names_it(ckpt, tmp_path, edit, key):
    _edit_args(ckpt, lambda args: args.update(edit))
    (ckpt / "release/arguments.json").unlink()
    with pytest.raises(LayoutError) as e:
        merge(ckpt, tmp_path / "out")
    assert e.value.key == key and "model_optim_rng.pt" in str(e.value)
    assert_nothing_written(tmp_path / "out")
