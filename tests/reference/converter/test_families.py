"""The families' config tables, both ways: what is written is read back as the same model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from vla_reference.converter import CONFIG_KEYS, FAMILIES, Arch, Params, family_for_arch
from vla_reference.converter._families import _COMPARED

from builders import gpt2, llama, moe

FAMILY = {f.name: f for f in FAMILIES}

SAMPLES: dict[str, list[Arch]] = {
    "llama": [llama(), llama(add_bias_linear=True), llama(rope_scaling_factor=8.0, rotary_base=5e5)],
    "mistral": [llama(), llama(rotary_seq_len_interpolation_factor=4.0)],
    "qwen2": [llama(add_qkv_bias=True), llama(add_qkv_bias=True, tied=True, num_query_groups=4)],
    "qwen3": [llama(qk_layernorm=True), llama(qk_layernorm=True, kv_channels=16)],
    "mixtral": [moe(every=1), dataclasses.replace(moe(every=1), moe_router_topk=1)],
    "qwen2_moe": [
        moe(every=2),
        moe(every=1, add_qkv_bias=True, moe_shared_expert_intermediate_size=24, moe_shared_expert_gate=True),
    ],
    "qwen3_moe": [moe(every=2, qk_layernorm=True), moe(every=1, qk_layernorm=True)],
    "gpt2": [gpt2(), gpt2(tied=False, activation="gelu_tanh", ffn_hidden_size=96)],
}


def _described(arch: Arch) -> dict:
    """The fields config.json carries; without a dense MLP anywhere, its width is unused."""
    unused = {"ffn_hidden_size"} if arch.num_experts and all(arch.moe_layers) else set()
    return {name: getattr(arch, name) for name in _COMPARED if name not in unused}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    ("family", "arch"),
    [(f, a) for f, archs in SAMPLES.items() for a in archs],
    ids=[f"{f}-{i}" for f, archs in SAMPLES.items() for i in range(len(archs))],
)
def test_read_of_write_is_the_same_model(family, arch, dtype):
    fam = FAMILY[family]
    arch = dataclasses.replace(arch, params_dtype=dtype)
    assert not fam.problems(arch), fam.problems(arch)
    config = fam.hf_config(arch, dtype)
    back = fam.read_config(Params(config, Path("config.json"), noun="config.json value"))
    assert _described(back) == _described(arch)


def test_every_family_is_sampled():
    assert set(SAMPLES) == set(FAMILY)


@pytest.mark.parametrize("family", sorted(FAMILY))
def test_every_field_read_names_its_key(family):
    """A message about any model field can name the config.json key to fix."""
    fam = FAMILY[family]
    arch = SAMPLES[family][0]
    config = fam.hf_config(arch, torch.float32)
    read = fam.read_config(Params(config, Path("config.json")))
    changed = {f.name for f in dataclasses.fields(Arch) if getattr(read, f.name) != getattr(Arch, f.name, None)}
    missing = sorted((changed & set(_COMPARED)) - set(CONFIG_KEYS[family]))
    assert not missing, f"{family}: fields read without a key to name: {missing}"
    for key in CONFIG_KEYS[family].values():
        top = key.split(".")[0]
        assert top in config or top in ("model_type", "architectures"), f"{family}: {key} names no written key"


def test_the_writer_picks_a_family_whose_table_reads_the_model_back():
    for archs in SAMPLES.values():
        for arch in archs:
            fam = family_for_arch(arch)
            back = fam.read_config(Params(fam.hf_config(arch, torch.float32), Path("config.json")))
            assert _described(back) == _described(arch), fam.name
