"""A plain-torch forward pass of a Megatron GPT over canonical weights (Megatron's semantics).

Independent of transformers' modeling code: it is what the merged checkpoint must compute.
Runs in float32 whatever the weights' dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..converter._model import Arch

__all__ = [
    "reference_logits",
    "rope_cos_sin",
    "apply_rope",
    "norm",
    "mlp_act",
    "attention",
    "qk_norm",
    "route",
    "moe",
    "shared_expert",
]

Getter = Callable[[str], torch.Tensor]
# (query norm weight, its bias, key norm weight, its bias); biases only with LayerNorm
QKNorm = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]


def norm(arch: Arch, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    if arch.normalization == "RMSNorm":
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + arch.norm_epsilon) * weight
    return F.layer_norm(x, (x.shape[-1],), weight, bias, arch.norm_epsilon)


def rope_inv_freq(arch: Arch) -> torch.Tensor:
    """RoPE's inverse frequencies, with Megatron's Llama 3.x scaling when ``use_rope_scaling``
    was on: wavelengths past 8192 positions slowed by the factor, under 2048 kept, those
    between blended."""
    d = arch.kv_channels
    inv_freq = 1.0 / (arch.rotary_base ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
    factor = arch.rope_scaling_factor
    if factor is None:
        return inv_freq
    old_context, low, high = 8192.0, 1.0, 4.0
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_context / low, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_context / high) & (wavelen <= old_context / low)
    return torch.where(medium, blended, scaled)


def rope_cos_sin(arch: Arch, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    pos = positions.float()
    if arch.rotary_seq_len_interpolation_factor is not None:
        pos = pos / arch.rotary_seq_len_interpolation_factor
    freqs = pos[:, None] * rope_inv_freq(arch)[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)  # rotate-half layout (rotary_interleaved=False)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, T, heads, d]; cos/sin: [T, d]."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos[None, :, None, :] + rotated * sin[None, :, None, :]


def mlp_act(arch: Arch, h: torch.Tensor) -> torch.Tensor:
    if arch.swiglu:
        gate, up = h.chunk(2, dim=-1)
        return F.silu(gate) * up
    return F.gelu(h, approximate="tanh" if arch.activation == "gelu_tanh" else "none")


def qk_norm(arch: Arch, get: Getter, prefix: str) -> QKNorm | None:
    """The query/key norms of the layer whose attention keys start with ``prefix``, if it has them."""
    if not arch.qk_layernorm:
        return None
    nb = arch.has_norm_bias
    q, k = prefix + "q_layernorm.", prefix + "k_layernorm."
    return get(q + "weight"), get(q + "bias") if nb else None, get(k + "weight"), get(k + "bias") if nb else None


def _linear(get: Getter, prefix: str, x: torch.Tensor, bias: bool) -> torch.Tensor:
    return F.linear(x, get(prefix + ".weight"), get(prefix + ".bias") if bias else None)


def attention(
    arch: Arch,
    qkv: torch.Tensor,
    cos_sin: tuple[torch.Tensor, torch.Tensor] | None,
    heads_per_group: int | None = None,
    qk_norm: QKNorm | None = None,
) -> torch.Tensor:
    """Causal GQA attention over a fused per-group QKV activation [B, T, groups*(qpg+2)*d].

    ``heads_per_group`` is the query heads each group holds here: fewer than the model's on a
    tensor-parallel rank that shares its group with others. ``qk_norm`` (``qk_layernorm``):
    the query and key norms' weights and biases, applied to each head before rotary embeddings.
    """
    b, t, _ = qkv.shape
    d = arch.kv_channels
    qpg = heads_per_group or arch.heads_per_group
    groups = qkv.shape[-1] // ((qpg + 2) * d)
    x = qkv.view(b, t, groups, qpg + 2, d)
    q = x[:, :, :, :qpg].reshape(b, t, groups * qpg, d)
    k, v = x[:, :, :, qpg], x[:, :, :, qpg + 1]
    if qk_norm is not None:
        q, k = norm(arch, q, qk_norm[0], qk_norm[1]), norm(arch, k, qk_norm[2], qk_norm[3])
    if cos_sin is not None:
        q, k = apply_rope(q, *cos_sin), apply_rope(k, *cos_sin)
    k = k.repeat_interleave(qpg, dim=2)
    v = v.repeat_interleave(qpg, dim=2)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d)
    mask = torch.ones(t, t, dtype=torch.bool).triu(1)
    probs = scores.masked_fill(mask, float("-inf")).softmax(-1)
    return torch.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, t, groups * qpg * d)


def route(arch: Arch, router: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k expert indices and weights: softmax over the chosen logits (Megatron's default)."""
    top, idx = F.linear(h, router).topk(arch.moe_router_topk, dim=-1)
    return idx, top.softmax(-1)


def moe(arch: Arch, get: Getter, prefix: str, h: torch.Tensor, experts: range | None = None) -> torch.Tensor:
    """The MoE block's output from ``experts`` (default: all of them), summed with their weights."""
    idx, weights = route(arch, get(prefix + "router.weight"), h)
    out = torch.zeros_like(h)
    for e in experts if experts is not None else range(arch.num_experts):
        hit = idx == e
        rows = hit.any(-1)
        if not rows.any():
            continue
        p = f"{prefix}experts.local_experts.{e}."
        y = _linear(
            get,
            p + "linear_fc2",
            mlp_act(arch, _linear(get, p + "linear_fc1", h[rows], arch.add_bias_linear)),
            arch.add_bias_linear,
        )
        out[rows] += y * (weights * hit).sum(-1)[rows, None]
    return out


def shared_expert(arch: Arch, get: Getter, prefix: str, h: torch.Tensor) -> torch.Tensor:
    """The shared experts' output beside the routed ones: a dense MLP on every token, scaled by
    ``sigmoid(h . gate_weight)`` with ``moe_shared_expert_gate`` (Megatron's SharedExpertMLP)."""
    p = prefix + "shared_experts."
    y = F.linear(mlp_act(arch, F.linear(h, get(p + "linear_fc1.weight"))), get(p + "linear_fc2.weight"))
    if arch.moe_shared_expert_gate:
        y = y * torch.sigmoid(F.linear(h, get(p + "gate_weight")))
    return y


def reference_logits(arch: Arch, get: Getter, input_ids: torch.Tensor) -> torch.Tensor:
    """Logits [B, T, vocab] of the model whose canonical weights ``get`` returns.

    Example:
        >>> from vla_reference.converter import random_weights
        >>> arch = Arch(num_layers=1, hidden_size=8, ffn_hidden_size=16, num_attention_heads=2,
        ...     num_query_groups=2, kv_channels=4, padded_vocab_size=11, vocab_size=11)
        >>> w = random_weights(arch)
        >>> reference_logits(arch, w.__getitem__, torch.tensor([[1, 2, 3]])).shape
        torch.Size([1, 3, 11])
    """

    def g(key: str) -> torch.Tensor:
        return get(key).float()

    t = input_ids.shape[1]
    x = F.embedding(input_ids, g("embedding.word_embeddings.weight"))
    if arch.position_embedding_type == "learned_absolute":
        x = x + g("embedding.position_embeddings.weight")[:t][None]
    cos_sin = rope_cos_sin(arch, torch.arange(t)) if arch.position_embedding_type == "rope" else None
    nb = arch.has_norm_bias
    for layer in range(arch.num_layers):
        p = f"decoder.layers.{layer}."
        h = norm(arch, x, g(p + "input_layernorm.weight"), g(p + "input_layernorm.bias") if nb else None)
        qkv = _linear(g, p + "self_attention.linear_qkv", h, arch.qkv_bias)
        ctx = attention(arch, qkv, cos_sin, qk_norm=qk_norm(arch, g, p + "self_attention."))
        x = x + _linear(g, p + "self_attention.linear_proj", ctx, arch.add_bias_linear)
        h = norm(arch, x, g(p + "pre_mlp_layernorm.weight"), g(p + "pre_mlp_layernorm.bias") if nb else None)
        if arch.is_moe_layer(layer):
            y = moe(arch, g, p + "mlp.", h)
            if arch.moe_shared_expert_intermediate_size:
                y = y + shared_expert(arch, g, p + "mlp.", h)
            x = x + y
        else:
            a = mlp_act(arch, _linear(g, p + "mlp.linear_fc1", h, arch.add_bias_linear))
            x = x + _linear(g, p + "mlp.linear_fc2", a, arch.add_bias_linear)
    x = norm(arch, x, g("decoder.final_layernorm.weight"), g("decoder.final_layernorm.bias") if nb else None)
    head = "embedding.word_embeddings.weight" if arch.tied else "output_layer.weight"
    return F.linear(x, g(head))
