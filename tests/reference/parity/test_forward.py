"""A merged checkpoint computes, in stock transformers, what the Megatron model computes."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from vla_reference import merge, reshard
from vla_reference.parity import reference_logits

from builders import gpt2, llama, moe, write_model

CASES = {
    "llama-gqa": (llama(num_query_groups=2), "LlamaForCausalLM"),
    "llama-bias-tied": (llama(add_bias_linear=True, tied=True), "LlamaForCausalLM"),
    "gpt2-exact-gelu": (gpt2(), "GPT2LMHeadModel"),
    "gpt2-tanh-gelu-untied": (gpt2(activation="gelu_tanh", tied=False), "GPT2LMHeadModel"),
    "moe-interleaved": (moe(every=2), "Qwen2MoeForCausalLM"),
    "moe-every-layer": (moe(every=1), "MixtralForCausalLM"),
    "moe-qkv-bias": (moe(every=2, add_qkv_bias=True), "Qwen2MoeForCausalLM"),
    "qkv-bias-only": (llama(add_qkv_bias=True), "Qwen2ForCausalLM"),
    "qk-layernorm": (llama(qk_layernorm=True, tied=True), "Qwen3ForCausalLM"),
    "moe-qk-layernorm": (moe(every=2, qk_layernorm=True), "Qwen3MoeForCausalLM"),
    "moe-every-layer-qk-layernorm": (moe(every=1, qk_layernorm=True), "Qwen3MoeForCausalLM"),
    "moe-shared-expert": (
        moe(every=2, moe_shared_expert_intermediate_size=24, moe_shared_expert_gate=True),
        "Qwen2MoeForCausalLM",
    ),
    # kv_channels 8, base 1e6: wavelengths 6, 199, 6283 (blended) and 198692 (slowed) positions
    "llama3-rope-scaling": (llama(rope_scaling_factor=8.0, rotary_base=1e6), "LlamaForCausalLM"),
    "rope-interpolation": (llama(rotary_seq_len_interpolation_factor=4.0), "LlamaForCausalLM"),
}


@pytest.mark.parametrize("name", CASES)
def test_merged_model_matches_plain_torch_forward(tmp_path, name):
    arch, cls = CASES[name]
    weights = write_model(arch, tmp_path / "hf", seed=7)
    reshard(tmp_path / "hf", tmp_path / "mg", tp=2, pp=2, ep=2 if arch.num_experts else 1, fsync=False)
    merge(tmp_path / "mg", tmp_path / "merged", fsync=False)
    model, info = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", output_loading_info=True)
    assert type(model).__name__ == cls
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    ids = torch.randint(0, arch.rows_vocab, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = model(ids).logits
    want = reference_logits(arch, weights.__getitem__, ids)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)


def test_a_mistral_config_reads_as_the_llama_it_computes(tmp_path):
    """A shipped model may use MistralForCausalLM: without a sliding window it is Llama without
    biases. It reshards like one, merges back as Llama, and transformers computes the same logits."""
    import json

    from builders import assert_same, hf_tensors

    arch = llama(num_query_groups=2)
    weights = write_model(arch, tmp_path / "hf", seed=3)
    cfg = json.loads((tmp_path / "hf/config.json").read_text())
    cfg.update(architectures=["MistralForCausalLM"], model_type="mistral", sliding_window=None)
    (tmp_path / "hf/config.json").write_text(json.dumps(cfg))
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert type(model).__name__ == "MistralForCausalLM"
    ids = torch.randint(0, arch.rows_vocab, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(
            model(ids).logits, reference_logits(arch, weights.__getitem__, ids), atol=2e-5, rtol=1e-5
        )
    reshard(tmp_path / "hf", tmp_path / "mg", tp=2, pp=2, fsync=False)
    merge(tmp_path / "mg", tmp_path / "merged", fsync=False)
    assert json.loads((tmp_path / "merged/config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    assert_same(hf_tensors(tmp_path / "hf"), hf_tensors(tmp_path / "merged"))


@pytest.mark.parametrize("name", CASES)
def test_the_streamed_model_computes_what_from_pretrained_loads(tmp_path, name):
    """The parity forward at scale (one module's weights at a time, ``streamed_model``) is stock
    transformers' forward over what ``from_pretrained`` loads, to the bit, for every family the
    converter maps (fused MoE experts included); after the forward no weight stays resident."""
    from vla_reference.hf import HFSource, streamed_model

    arch, cls = CASES[name]
    write_model(arch, tmp_path / "hf", seed=7)
    whole = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    streamed = streamed_model(HFSource(tmp_path / "hf"))
    assert type(streamed).__name__ == cls
    ids = torch.randint(0, arch.rows_vocab, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = whole(ids).logits, streamed(ids).logits
    assert torch.equal(got, want), (got - want).abs().max()
    assert {p.device.type for p in streamed.parameters()} == {"meta"}


def test_the_streamed_model_refuses_weights_transformers_would_not_load_as_they_are(tmp_path):
    """Where from_pretrained would initialise a missing weight at random or drop an unused one,
    the streamed model is an error naming the key; a shape that differs, naming the file too.
    (HFSource refuses the first two for the families it maps; the streamed model checks against
    transformers' own parameters, so a transformers whose classes changed is caught as well.)"""
    from safetensors.torch import load_file, save_file

    from vla_reference.errors import LayoutError, ShardMismatchError
    from vla_reference.hf import HFSource, streamed_model

    write_model(llama(), tmp_path / "hf", seed=7)
    path = tmp_path / "hf/model.safetensors"
    good = load_file(path)
    key = "model.layers.0.mlp.up_proj.weight"

    lacking = HFSource(path.parent)
    del lacking._where[key]  # what a transformers with one more parameter than the converter knows sees
    with pytest.raises(LayoutError, match=f"LlamaForCausalLM needs {key} and no file holds it") as e:
        streamed_model(lacking)
    assert e.value.key == key
    extra = HFSource(path.parent)
    extra._where["model.layers.0.mlp.extra.weight"] = extra._where[key]
    with pytest.raises(LayoutError, match="has no parameter for model.layers.0.mlp.extra.weight"):
        streamed_model(extra)
    save_file({**good, key: good[key][:-1].contiguous()}, path, metadata={"format": "pt"})
    with pytest.raises(ShardMismatchError, match=r"shape \[\d+, \d+\] where transformers' LlamaForCausalLM has") as e:
        streamed_model(HFSource(path.parent, check_shapes=False))
    assert (e.value.path, e.value.key) == (path, key)
