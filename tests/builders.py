"""Tiny models for the tests: architectures, Hugging Face directories, Megatron checkpoints."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from vla_reference import Arch, HFSource, write_hf
from vla_reference.converter import DictSource, random_weights
from vla_reference.megatron import load_pt


def llama(**kw) -> Arch:
    base = dict(
        num_layers=4,
        hidden_size=32,
        ffn_hidden_size=64,
        num_attention_heads=4,
        num_query_groups=2,
        kv_channels=8,
        padded_vocab_size=100,
        vocab_size=100,
        normalization="RMSNorm",
        norm_epsilon=1e-5,
        swiglu=True,
        position_embedding_type="rope",
        max_position_embeddings=64,
        tied=False,
        add_bias_linear=False,
        activation="silu",
    )
    base.update(kw)
    return Arch(**base)


def gpt2(**kw) -> Arch:
    base = dict(
        num_layers=4,
        hidden_size=32,
        ffn_hidden_size=128,
        num_attention_heads=4,
        num_query_groups=4,
        kv_channels=8,
        padded_vocab_size=97,
        vocab_size=97,
        normalization="LayerNorm",
        norm_epsilon=1e-5,
        swiglu=False,
        position_embedding_type="learned_absolute",
        max_position_embeddings=64,
        tied=True,
        add_bias_linear=True,
        activation="gelu",
    )
    base.update(kw)
    return Arch(**base)


def moe(*, every: int = 2, **kw) -> Arch:
    layers = kw.pop("num_layers", 4)
    return llama(
        num_layers=layers,
        num_experts=4,
        moe_router_topk=2,
        moe_ffn_hidden_size=48,
        moe_layers=tuple(i % every == 0 for i in range(layers)),
        **kw,
    )


def write_model(arch: Arch, dst: Path, *, seed: int = 0, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Write random weights for ``arch`` as a HF directory; returns the canonical weights."""
    weights = random_weights(arch, seed=seed, dtype=dtype)
    write_hf(DictSource(arch, weights), dst, fsync=False)
    return weights


def with_vocab(arch: Arch, vocab: int) -> Arch:
    return dataclasses.replace(arch, vocab_size=vocab, padded_vocab_size=vocab)


def hf_tensors(path: Path) -> dict[str, torch.Tensor]:
    src = HFSource(path)
    return {k: src.hf_tensor(k).clone() for k in src._where}


def rank_models(root: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {f.parent.name: dict(load_pt(f).obj["model"]) for f in sorted(root.glob("*/mp_rank_*/model_optim_rng.pt"))}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if a[k] is None or b[k] is None:  # a linear module's _extra_state
            assert a[k] is None and b[k] is None, k
            continue
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k
