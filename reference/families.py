"""Stock transformers classes that compute exactly what a Megatron GPT computes.

A family is a record: when it applies, its config.json, and a key table from canonical
Megatron names to Hub names (with the codec that converts between them). The registry is a
tuple searched in order; nothing dispatches on strings elsewhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import torch

from .arch import MAX_COUNT, Arch, Params, check_relations
from .codecs import GATED_SPLIT, GPT2_QKV, GPT2_QKV_BIAS, IDENTITY, QKV_SPLIT, TRANSPOSE, Codec
from .errors import LayoutError, UnsupportedModelError
from .spec import format_key

__all__ = ["Family", "KeyMap", "Extra", "FAMILIES", "family_for_arch", "family_for_config", "arch_from_config"]

_L: Final = "decoder.layers.{layer}."
_X: Final = "decoder.layers.{layer}.mlp.experts.local_experts.{expert}."


@dataclass(frozen=True)
class KeyMap:
    """One canonical parameter <-> one or more Hub tensors."""

    canonical: str
    hf: tuple[str, ...]
    codec: Codec = IDENTITY

    def hf_keys(self, layer: int | None, expert: int | None) -> tuple[str, ...]:
        return tuple(format_key(t, layer, expert) for t in self.hf)


@dataclass(frozen=True)
class Extra:
    """A Hub tensor the class requires that Megatron does not have; always zeros (adds nothing)."""

    hf: str  # in every MoE layer
    shape: Callable[[Arch], tuple[int, ...]]
    applies: Callable[[Arch], bool] = lambda arch: True


def _attention(prefix: str) -> tuple[KeyMap, ...]:
    a = prefix + "self_attn."
    return (
        KeyMap(_L + "input_layernorm.weight", (prefix + "input_layernorm.weight",)),
        KeyMap(
            _L + "self_attention.linear_qkv.weight",
            (a + "q_proj.weight", a + "k_proj.weight", a + "v_proj.weight"),
            QKV_SPLIT,
        ),
        KeyMap(
            _L + "self_attention.linear_qkv.bias", (a + "q_proj.bias", a + "k_proj.bias", a + "v_proj.bias"), QKV_SPLIT
        ),
        KeyMap(_L + "self_attention.linear_proj.weight", (a + "o_proj.weight",)),
        KeyMap(_L + "self_attention.linear_proj.bias", (a + "o_proj.bias",)),
        KeyMap(_L + "pre_mlp_layernorm.weight", (prefix + "post_attention_layernorm.weight",)),
    )


def _qk_norms(prefix: str) -> tuple[KeyMap, ...]:
    # Megatron's q_layernorm/k_layernorm normalise each head over kv_channels, before rotary
    # embeddings: what Qwen3's q_norm/k_norm do.
    a = prefix + "self_attn."
    return (
        KeyMap(_L + "self_attention.q_layernorm.weight", (a + "q_norm.weight",)),
        KeyMap(_L + "self_attention.k_layernorm.weight", (a + "k_norm.weight",)),
    )


def _gated_mlp(canon: str, prefix: str, gate: str, up: str, down: str) -> tuple[KeyMap, ...]:
    return (
        KeyMap(canon + "linear_fc1.weight", (prefix + gate + ".weight", prefix + up + ".weight"), GATED_SPLIT),
        KeyMap(canon + "linear_fc1.bias", (prefix + gate + ".bias", prefix + up + ".bias"), GATED_SPLIT),
        KeyMap(canon + "linear_fc2.weight", (prefix + down + ".weight",)),
        KeyMap(canon + "linear_fc2.bias", (prefix + down + ".bias",)),
    )


_LLAMA_ENDS: Final = (
    KeyMap("embedding.word_embeddings.weight", ("model.embed_tokens.weight",)),
    KeyMap("decoder.final_layernorm.weight", ("model.norm.weight",)),
    KeyMap("output_layer.weight", ("lm_head.weight",)),
)
_LP: Final = "model.layers.{layer}."


# Megatron's Llama 3.x scaling fixes everything but the factor (RotaryEmbedding._apply_scaling).
LLAMA3_ROPE: Final = {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


def _rope(arch: Arch) -> dict[str, Any]:
    params: dict[str, Any] = {"rope_type": "default", "rope_theta": arch.rotary_base}
    if arch.rope_scaling_factor is not None:
        params.update(rope_type="llama3", factor=arch.rope_scaling_factor, **LLAMA3_ROPE)
    elif arch.rotary_seq_len_interpolation_factor is not None:
        params.update(rope_type="linear", factor=arch.rotary_seq_len_interpolation_factor)
    return {"rope_parameters": params}


def _common(arch: Arch, dtype: torch.dtype) -> dict[str, Any]:
    return {
        "vocab_size": arch.rows_vocab,
        "tie_word_embeddings": arch.tied,
        "dtype": str(dtype).removeprefix("torch."),
        "bos_token_id": None,
        "eos_token_id": None,
        "pad_token_id": None,
    }


def _llama_like(arch: Arch) -> dict[str, Any]:
    return {
        "hidden_size": arch.hidden_size,
        "num_hidden_layers": arch.num_layers,
        "num_attention_heads": arch.num_attention_heads,
        "num_key_value_heads": arch.num_query_groups,
        "head_dim": arch.kv_channels,
        "hidden_act": "silu",
        "rms_norm_eps": arch.norm_epsilon,
        "max_position_embeddings": arch.max_position_embeddings,
        "attention_dropout": 0.0,
        **_rope(arch),
    }


def _rope_problems(arch: Arch) -> list[str]:
    out = []
    if arch.normalization != "RMSNorm":
        out.append(f"normalization={arch.normalization} (needs RMSNorm)")
    if not arch.swiglu:
        out.append("swiglu=false (needs SwiGLU)")
    if arch.position_embedding_type != "rope":
        out.append(f"position_embedding_type={arch.position_embedding_type} (needs rope)")
    if arch.rotary_percent != 1.0 or arch.rotary_interleaved:
        out.append("partial or interleaved rotary embeddings")
    if arch.rope_scaling_factor is not None and arch.rotary_seq_len_interpolation_factor is not None:
        out.append("Llama 3.x rope scaling and sequence-length interpolation together")
    return out


def _qk_norm_problems(arch: Arch, *, wanted: bool) -> list[str]:
    if arch.qk_layernorm and not wanted:
        return ["qk_layernorm (the Qwen3 classes have it)"]
    if wanted and not arch.qk_layernorm:
        return ["no qk_layernorm (this class always normalises queries and keys)"]
    return []


def _router_problems(arch: Arch, *, shared_experts: bool = False) -> list[str]:
    """``shared_experts``: the class has a shared expert with a sigmoid gate (Qwen2-MoE)."""
    out = []
    if arch.moe_router_score_function != "softmax" or arch.moe_router_pre_softmax:
        out.append("router must be softmax over the top-k logits (moe_router_pre_softmax=false)")
    if arch.moe_shared_expert_intermediate_size and not shared_experts:
        out.append("shared experts")
    elif arch.moe_shared_expert_intermediate_size and not arch.moe_shared_expert_gate:
        out.append("shared experts without moe_shared_expert_gate (Qwen2-MoE gates its shared expert)")
    return out


@dataclass(frozen=True)
class Family:
    """A stock transformers class and how Megatron parameters map onto it."""

    name: str
    architecture: str
    model_type: str
    problems: Callable[[Arch], list[str]]  # why this class cannot express ``arch``; empty if it can
    keymap: tuple[KeyMap, ...]
    config: Callable[[Arch, torch.dtype], dict[str, Any]]
    extras: tuple[Extra, ...] = ()

    def extras_for(self, arch: Arch) -> list[Extra]:
        return [e for e in self.extras if e.applies(arch)]

    def hf_config(self, arch: Arch, dtype: torch.dtype) -> dict[str, Any]:
        cfg = {"architectures": [self.architecture], "model_type": self.model_type}
        cfg.update(_common(arch, dtype))
        cfg.update(self.config(arch, dtype))
        return cfg

    def map_for(self, canonical_key: str) -> tuple[KeyMap, int | None, int | None]:
        for km in self.keymap:
            m = _pattern(km.canonical).match(canonical_key)
            if m:
                g = m.groupdict()
                return km, _int(g.get("layer")), _int(g.get("expert"))
        raise UnsupportedModelError(f"{self.architecture} has no tensor for this parameter", key=canonical_key)


def _int(x: str | None) -> int | None:
    return None if x is None else int(x)


_PATTERNS: dict[str, re.Pattern[str]] = {}


def _pattern(template: str) -> re.Pattern[str]:
    if template not in _PATTERNS:
        esc = re.escape(template).replace(r"\{layer\}", r"(?P<layer>\d+)").replace(r"\{expert\}", r"(?P<expert>\d+)")
        _PATTERNS[template] = re.compile(esc + r"\Z")
    return _PATTERNS[template]


def _dense_problems(arch: Arch, *, qk_norm: bool, biases_fit: bool, biases: str) -> list[str]:
    """Why a dense Llama-style class cannot compute ``arch``: RoPE and SwiGLU, qk norms exactly
    when the class has them (``qk_norm``), no experts, and the biases it has (``biases``: why not)."""
    out = _rope_problems(arch) + _qk_norm_problems(arch, wanted=qk_norm)
    if arch.num_experts:
        out.append("experts")
    if not biases_fit:
        out.append(biases)
    return out


def _llama_problems(arch: Arch) -> list[str]:
    return _dense_problems(
        arch,
        qk_norm=False,
        biases_fit=arch.add_bias_linear or not arch.add_qkv_bias,
        biases="QKV bias without output-projection bias (Llama's attention_bias covers both)",
    )


def _mistral_problems(arch: Arch) -> list[str]:
    return _dense_problems(arch, qk_norm=False, biases_fit=not arch.qkv_bias, biases="linear biases")


def _qwen2_problems(arch: Arch) -> list[str]:
    return _dense_problems(
        arch,
        qk_norm=False,
        biases_fit=arch.add_qkv_bias and not arch.add_bias_linear,
        biases="biases other than on QKV alone (Qwen2 has exactly those)",
    )


def _qwen3_problems(arch: Arch) -> list[str]:
    return _dense_problems(
        arch, qk_norm=True, biases_fit=not arch.qkv_bias, biases="linear biases (Qwen3 has none in its MLP)"
    )


def _dense_like(arch: Arch, **extra: Any) -> dict[str, Any]:
    """A dense Llama-style config: the shared keys, the MLP width, and the class's own ``extra``."""
    return {**_llama_like(arch), "intermediate_size": arch.ffn_hidden_size, **extra}


def _llama_config(arch: Arch, dtype: torch.dtype) -> dict[str, Any]:
    return _dense_like(arch, attention_bias=arch.add_bias_linear, mlp_bias=arch.add_bias_linear)


def _mistral_config(arch: Arch, dtype: torch.dtype) -> dict[str, Any]:
    return _dense_like(arch, sliding_window=None)


def _qwen2_config(arch: Arch, dtype: torch.dtype) -> dict[str, Any]:
    return _dense_like(arch, use_sliding_window=False)


def _qwen3_config(arch: Arch, dtype: torch.dtype) -> dict[str, Any]:
    return _dense_like(arch, attention_bias=False, use_sliding_window=False)


def _mixtral_problems(arch: Arch) -> list[str]:
    out = _rope_problems(arch) + _qk_norm_problems(arch, wanted=False) + _router_problems(arch)
    if not arch.num_experts or not all(arch.moe_layers):
        out.append("Mixtral needs experts in every layer")
    if arch.add_bias_linear or arch.add_qkv_bias:
        out.append("linear biases")
    return out


def _mixtral_config(arch: Arch, dtype: torch.dtype) -> dict[str, Any]:
    return {
        **_llama_like(arch),
        "intermediate_size": arch.moe_ffn_hidden_size,
        "num_local_experts": arch.num_experts,
        "num_experts_per_tok": arch.moe_router_topk,
        "router_jitter_noise": 0.0,
        "sliding_window": None,
        "output_router_logits": False,
    }


def _qwen2_moe_problems(arch: Arch) -> list[str]:
    out = _rope_problems(arch) + _qk_norm_problems(arch, wanted=False) + _router_problems(arch, shared_experts=True)
    if not arch.num_experts:
        out.append("no experts")
    if arch.add_bias_linear:
        out.append("linear biases other than QKV")
    return out


def _qwen3_moe_problems(arch: Arch) -> list[str]:
    out = _rope_problems(arch) + _qk_norm_problems(arch, wanted=True) + _router_problems(arch)
    if not arch.num_experts:
        out.append("no experts")
    if arch.add_bias_linear or arch.add_qkv_bias:
        out.append("linear biases")
    return out


def _qwen_moe_like(arch: Arch) -> dict[str, Any]:
    """What the Qwen MoE configs share: every MoE layer at decoder_sparse_step 1, minus the
    dense ones, routed by a softmax over the top-k logits (norm_topk_prob)."""
    return _dense_like(
        arch,
        moe_intermediate_size=arch.moe_ffn_hidden_size,
        num_experts=arch.num_experts,
        num_experts_per_tok=arch.moe_router_topk,
        norm_topk_prob=True,
        decoder_sparse_step=1,
        mlp_only_layers=[i for i, moe in enumerate(arch.moe_layers) if not moe],
        use_sliding_window=False,
        output_router_logits=False,
    )


def _qwen3_moe_config(arch: Arch, dtype: torch.dtype) -> dict[str, Any]:
    return {**_qwen_moe_like(arch), "attention_bias": False}


def _qwen2_moe_config(arch: Arch, dtype: torch.dtype) -> dict[str, Any]:
    return {
        **_qwen_moe_like(arch),
        "shared_expert_intermediate_size": arch.moe_shared_expert_intermediate_size,
        "qkv_bias": arch.qkv_bias,
    }


def _gpt2_problems(arch: Arch) -> list[str]:
    out = []
    if arch.normalization != "LayerNorm":
        out.append(f"normalization={arch.normalization} (needs LayerNorm)")
    if arch.swiglu:
        out.append("swiglu (GPT-2 has a plain GELU MLP)")
    if arch.position_embedding_type != "learned_absolute":
        out.append(f"position_embedding_type={arch.position_embedding_type} (needs learned_absolute)")
    if not arch.add_bias_linear:
        out.append("no linear biases (GPT-2 has them everywhere)")
    if arch.num_query_groups != arch.num_attention_heads:
        out.append("grouped-query attention")
    if arch.num_attention_heads * arch.kv_channels != arch.hidden_size:
        out.append("kv_channels * heads != hidden_size")
    if arch.num_experts or arch.qk_layernorm:
        out.append("experts or qk_layernorm")
    return out


def _gpt2_config(arch: Arch, dtype: torch.dtype) -> dict[str, Any]:
    return {
        "n_embd": arch.hidden_size,
        "n_layer": arch.num_layers,
        "n_head": arch.num_attention_heads,
        "n_inner": arch.ffn_hidden_size,
        "n_positions": arch.max_position_embeddings,
        "activation_function": "gelu" if arch.activation == "gelu" else "gelu_pytorch_tanh",
        "layer_norm_epsilon": arch.norm_epsilon,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
    }


_GP: Final = "transformer.h.{layer}."


def _gpt2_keymap() -> tuple[KeyMap, ...]:
    maps = [
        KeyMap("embedding.word_embeddings.weight", ("transformer.wte.weight",)),
        KeyMap("embedding.position_embeddings.weight", ("transformer.wpe.weight",)),
        KeyMap(_L + "self_attention.linear_qkv.weight", (_GP + "attn.c_attn.weight",), GPT2_QKV),
        KeyMap(_L + "self_attention.linear_qkv.bias", (_GP + "attn.c_attn.bias",), GPT2_QKV_BIAS),
        KeyMap(_L + "self_attention.linear_proj.weight", (_GP + "attn.c_proj.weight",), TRANSPOSE),
        KeyMap(_L + "self_attention.linear_proj.bias", (_GP + "attn.c_proj.bias",)),
        KeyMap(_L + "mlp.linear_fc1.weight", (_GP + "mlp.c_fc.weight",), TRANSPOSE),
        KeyMap(_L + "mlp.linear_fc1.bias", (_GP + "mlp.c_fc.bias",)),
        KeyMap(_L + "mlp.linear_fc2.weight", (_GP + "mlp.c_proj.weight",), TRANSPOSE),
        KeyMap(_L + "mlp.linear_fc2.bias", (_GP + "mlp.c_proj.bias",)),
        KeyMap("output_layer.weight", ("lm_head.weight",)),
    ]
    for canon, hf in (("input_layernorm", "ln_1"), ("pre_mlp_layernorm", "ln_2")):
        for leaf in ("weight", "bias"):
            maps.append(KeyMap(f"{_L}{canon}.{leaf}", (f"{_GP}{hf}.{leaf}",)))
    for leaf in ("weight", "bias"):
        maps.append(KeyMap(f"decoder.final_layernorm.{leaf}", (f"transformer.ln_f.{leaf}",)))
    return tuple(maps)


_SHARED: Final = _LP + "mlp.shared_expert"


def _no_shared_expert(arch: Arch) -> bool:
    return not arch.moe_shared_expert_intermediate_size


# Llama's layout, which every Llama-style class shares: embeddings, attention, a dense SwiGLU MLP.
_DENSE: Final = (
    *_LLAMA_ENDS,
    *_attention(_LP),
    *_gated_mlp(_L + "mlp.", _LP + "mlp.", "gate_proj", "up_proj", "down_proj"),
)
# The Qwen MoE classes' router and experts (beside the dense MLP of their mlp_only_layers).
_QWEN_EXPERTS: Final = (
    KeyMap(_L + "mlp.router.weight", (_LP + "mlp.gate.weight",)),
    *_gated_mlp(_X, _LP + "mlp.experts.{expert}.", "gate_proj", "up_proj", "down_proj"),
)

FAMILIES: Final[tuple[Family, ...]] = (
    Family("llama", "LlamaForCausalLM", "llama", _llama_problems, _DENSE, _llama_config),
    # Mistral without a sliding window is Llama without biases: read (a shipped model may use the
    # class), never chosen to write, since Llama comes first and accepts every model it does.
    Family("mistral", "MistralForCausalLM", "mistral", _mistral_problems, _DENSE, _mistral_config),
    Family("qwen2", "Qwen2ForCausalLM", "qwen2", _qwen2_problems, _DENSE, _qwen2_config),
    Family("qwen3", "Qwen3ForCausalLM", "qwen3", _qwen3_problems, (*_DENSE, *_qk_norms(_LP)), _qwen3_config),
    Family(
        "mixtral",
        "MixtralForCausalLM",
        "mixtral",
        _mixtral_problems,
        (
            *_LLAMA_ENDS,
            *_attention(_LP),
            KeyMap(_L + "mlp.router.weight", (_LP + "block_sparse_moe.gate.weight",)),
            *_gated_mlp(_X, _LP + "block_sparse_moe.experts.{expert}.", "w1", "w3", "w2"),
        ),
        _mixtral_config,
    ),
    Family(
        "qwen2_moe",
        "Qwen2MoeForCausalLM",
        "qwen2_moe",
        _qwen2_moe_problems,
        (
            *_DENSE,
            *_QWEN_EXPERTS,
            *_gated_mlp(_L + "mlp.shared_experts.", _SHARED + ".", "gate_proj", "up_proj", "down_proj"),
            KeyMap(_L + "mlp.shared_experts.gate_weight", (_SHARED + "_gate.weight",)),
        ),
        _qwen2_moe_config,
        # no shared experts (shared_expert_intermediate_size=0): an empty one, which adds exactly zero
        (
            Extra(_SHARED + ".gate_proj.weight", lambda a: (0, a.hidden_size), _no_shared_expert),
            Extra(_SHARED + ".up_proj.weight", lambda a: (0, a.hidden_size), _no_shared_expert),
            Extra(_SHARED + ".down_proj.weight", lambda a: (a.hidden_size, 0), _no_shared_expert),
            Extra(_SHARED + "_gate.weight", lambda a: (1, a.hidden_size), _no_shared_expert),
        ),
    ),
    Family(
        "qwen3_moe",
        "Qwen3MoeForCausalLM",
        "qwen3_moe",
        _qwen3_moe_problems,
        (*_DENSE, *_qk_norms(_LP), *_QWEN_EXPERTS),
        _qwen3_moe_config,
    ),
    Family("gpt2", "GPT2LMHeadModel", "gpt2", _gpt2_problems, _gpt2_keymap(), _gpt2_config),
)


def family_for_arch(arch: Arch) -> Family:
    """The first stock class that computes exactly this model, or an error saying why none does."""
    reasons = []
    for fam in FAMILIES:
        problems = fam.problems(arch)
        if not problems:
            return fam
        reasons.append(f"{fam.architecture}: {'; '.join(problems)}")
    raise UnsupportedModelError(
        "no stock transformers class computes this model exactly (" + " | ".join(reasons) + ")",
        fix="convert with a custom modeling class, or train with a supported configuration",
    )


def family_for_config(config: Mapping[str, Any], *, source: Any = None) -> Family:
    archs = config.get("architectures") or []
    if not (isinstance(archs, list) and all(isinstance(a, str) for a in archs)):
        raise LayoutError(
            f"architectures is {archs!r}, expected a list of class names", path=source, key="architectures"
        )
    for fam in FAMILIES:
        if fam.architecture in archs or config.get("model_type") == fam.model_type:
            return fam
    raise UnsupportedModelError(
        f"architectures {archs} / model_type {config.get('model_type')!r} is not one the converter maps",
        path=source,
        key="architectures",
        fix=f"use one of {', '.join(f.architecture for f in FAMILIES)}",
    )


_DT: Final = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _rope_of(c: Params, default_theta: float) -> tuple[float, dict[str, float]]:
    """RoPE's base and the Arch fields of its scaling, from ``rope_parameters`` (transformers 5),
    or ``rope_scaling`` beside ``rope_theta`` as earlier versions wrote them."""
    raw = c.get("rope_parameters") or c.get("rope_scaling") or {}
    key = "rope_parameters" if c.has("rope_parameters") else "rope_scaling"
    if not isinstance(raw, Mapping):
        raise LayoutError(f"{key} is {raw!r}, expected an object", path=c.source, key=key)
    rope = Params(raw, c.source, noun="config.json value", prefix=f"{key}.")
    theta = rope.float("rope_theta", c.float("rope_theta", default_theta, positive=True), positive=True)
    rope_type = rope.str("rope_type", rope.str("type", "default"))
    if rope_type == "default":
        return theta, {}
    if rope_type == "llama3" and all(k in raw and rope.float(k, 0.0) == v for k, v in LLAMA3_ROPE.items()):
        return theta, {"rope_scaling_factor": rope.float("factor", None, positive=True)}
    if rope_type == "linear":
        return theta, {"rotary_seq_len_interpolation_factor": rope.float("factor", None, positive=True)}
    raise UnsupportedModelError(
        f"rope_type {rope_type!r} with {dict(raw)} has no Megatron counterpart (default, linear, and "
        f"llama3 with {LLAMA3_ROPE} have)",
        path=c.source,
        key=key,
    )


def arch_from_config(config: Mapping[str, Any], *, source: Any = None) -> tuple[Family, Arch]:
    """Read an inference config.json back into the model it describes.

    Every value is type- and range-checked: a wrong one is a LayoutError naming the key.
    """
    fam = family_for_config(config, source=source)
    c = Params(config, source, noun="config.json value", fix="the config and the weights must describe the same model")
    arch = _arch_from_config(fam, c)
    keys = CONFIG_KEYS[fam.name]
    check_relations(arch, source=source, key=lambda field: keys.get(field, field))
    return fam, arch


def _arch_from_config(fam: Family, c: Params) -> Arch:
    source = c.source
    dtype = _DT.get(str(c.get("dtype") or c.get("torch_dtype") or "float32"), torch.float32)
    vocab = c.int("vocab_size")
    # absent, transformers uses the class's default: tied for GPT-2, untied for the others
    tied = c.bool("tie_word_embeddings", fam.name == "gpt2")
    if fam.name == "gpt2":
        for key, megatron in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False)):
            if c.bool(key, megatron) != megatron:
                raise UnsupportedModelError(
                    f"{key}={c.get(key)!r}: attention scores scaled otherwise than by 1/sqrt(head_dim)",
                    path=source,
                    key=key,
                )
        hidden, heads = c.int("n_embd"), c.int("n_head", maximum=c.int("n_embd"))
        act = c.str("activation_function", "gelu_new")
        if act not in ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
            raise UnsupportedModelError(f"activation_function {act!r}", path=source, key="activation_function")
        return Arch(
            num_layers=c.int("n_layer", maximum=MAX_COUNT),
            hidden_size=hidden,
            ffn_hidden_size=c.int("n_inner", 4 * hidden),
            num_attention_heads=heads,
            num_query_groups=heads,
            kv_channels=hidden // heads,
            padded_vocab_size=vocab,
            vocab_size=vocab,
            normalization="LayerNorm",
            norm_epsilon=c.float("layer_norm_epsilon", 1e-5),
            position_embedding_type="learned_absolute",
            max_position_embeddings=c.int("n_positions"),
            tied=tied,
            add_bias_linear=True,
            activation="gelu" if act == "gelu" else "gelu_tanh",
            params_dtype=dtype,
        )
    hidden, heads = c.int("hidden_size"), c.int("num_attention_heads")
    theta, scaling = _rope_of(c, 1e6 if fam.name == "mixtral" else 1e4)  # the classes' defaults
    layers = c.int("num_hidden_layers", maximum=MAX_COUNT)
    common: dict[str, Any] = dict(
        num_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        num_query_groups=c.int("num_key_value_heads", heads),
        kv_channels=c.int("head_dim", max(hidden // heads, 1)),
        padded_vocab_size=vocab,
        vocab_size=vocab,
        normalization="RMSNorm",
        norm_epsilon=c.float("rms_norm_eps", 1e-6),
        swiglu=True,
        position_embedding_type="rope",
        max_position_embeddings=c.int("max_position_embeddings"),
        rotary_base=theta,
        **scaling,
        tied=tied,
        activation="silu",
        params_dtype=dtype,
    )
    # Mixtral and Mistral use sliding_window whenever it is set (Mistral's default is 4096: it
    # must be written as null); the Qwen classes only with use_sliding_window.
    windowed = fam.name in ("mixtral", "mistral")
    if c.bool("use_sliding_window", False) or (
        windowed and (c.has("sliding_window") or fam.name == "mistral" and "sliding_window" not in c.raw)
    ):
        raise UnsupportedModelError(
            "sliding-window attention has no Megatron counterpart here",
            path=source,
            key="sliding_window" if windowed else "use_sliding_window",
            fix="turn sliding windows off in config.json if the model was trained with full attention",
        )
    if fam.name in ("qwen3", "qwen3_moe"):
        if c.bool("attention_bias", False):
            raise UnsupportedModelError(
                "attention_bias on every attention projection has no Megatron counterpart",
                path=source,
                key="attention_bias",
            )
        common["qk_layernorm"] = True
    if fam.name == "llama":
        bias = c.bool("attention_bias", False)
        if bias != c.bool("mlp_bias", False):
            raise UnsupportedModelError("attention_bias and mlp_bias differ", path=source, key="mlp_bias")
        return Arch(ffn_hidden_size=c.int("intermediate_size"), add_bias_linear=bias, **common)
    if fam.name in ("mistral", "qwen2", "qwen3"):
        return Arch(
            ffn_hidden_size=c.int("intermediate_size"),
            add_bias_linear=False,
            add_qkv_bias=fam.name == "qwen2",
            **common,
        )
    if fam.name == "mixtral":
        moe = c.int("intermediate_size")
        return Arch(
            ffn_hidden_size=moe,
            add_bias_linear=False,
            num_experts=c.int("num_local_experts", maximum=MAX_COUNT),
            moe_router_topk=c.int("num_experts_per_tok"),
            moe_ffn_hidden_size=moe,
            moe_layers=(True,) * layers,
            **common,
        )
    # qwen2_moe, qwen3_moe
    shared = c.int("shared_expert_intermediate_size", 0, minimum=0) if fam.name == "qwen2_moe" else 0
    if not c.bool("norm_topk_prob", False):
        raise UnsupportedModelError("norm_topk_prob=false routing", path=source, key="norm_topk_prob")
    dense = set(c.ints("mlp_only_layers", below=layers))
    step = c.int("decoder_sparse_step", 1)
    pattern = tuple(i not in dense and (i + 1) % step == 0 for i in range(layers))
    return Arch(
        ffn_hidden_size=c.int("intermediate_size"),
        add_bias_linear=False,
        add_qkv_bias=fam.name == "qwen2_moe" and c.bool("qkv_bias", True),
        num_experts=c.int("num_experts", maximum=MAX_COUNT),
        moe_router_topk=c.int("num_experts_per_tok"),
        moe_ffn_hidden_size=c.int("moe_intermediate_size"),
        moe_layers=pattern,
        moe_shared_expert_intermediate_size=shared,
        moe_shared_expert_gate=bool(shared),  # Qwen2-MoE always gates its shared expert
        **common,
    )


# Arch field -> config.json key, per family (for messages that name the key to fix).
_COMMON_KEYS: Final = {
    "num_layers": "num_hidden_layers",
    "hidden_size": "hidden_size",
    "ffn_hidden_size": "intermediate_size",
    "num_attention_heads": "num_attention_heads",
    "num_query_groups": "num_key_value_heads",
    "kv_channels": "head_dim",
    "rows_vocab": "vocab_size",
    "norm_epsilon": "rms_norm_eps",
    "max_position_embeddings": "max_position_embeddings",
    "rotary_base": "rope_parameters.rope_theta",
    "rope_scaling_factor": "rope_parameters.factor",
    "rotary_seq_len_interpolation_factor": "rope_parameters.factor",
    "tied": "tie_word_embeddings",
    "add_bias_linear": "attention_bias",
    "params_dtype": "dtype",
    "normalization": "model_type",
    "swiglu": "model_type",
    "position_embedding_type": "model_type",
    "activation": "hidden_act",
}
CONFIG_KEYS: Final[dict[str, dict[str, str]]] = {
    "llama": dict(_COMMON_KEYS),
    "mistral": {**_COMMON_KEYS, "add_bias_linear": "model_type"},
    "mixtral": {
        **_COMMON_KEYS,
        "moe_ffn_hidden_size": "intermediate_size",
        "num_experts": "num_local_experts",
        "moe_router_topk": "num_experts_per_tok",
        "moe_layers": "architectures",
    },
    "qwen2": {**_COMMON_KEYS, "add_bias_linear": "model_type", "add_qkv_bias": "model_type"},
    "qwen3": {**_COMMON_KEYS, "qk_layernorm": "model_type"},
    "qwen3_moe": {
        **_COMMON_KEYS,
        "moe_ffn_hidden_size": "moe_intermediate_size",
        "num_experts": "num_experts",
        "moe_router_topk": "num_experts_per_tok",
        "moe_layers": "mlp_only_layers",
        "qk_layernorm": "model_type",
    },
    "qwen2_moe": {
        **_COMMON_KEYS,
        "moe_ffn_hidden_size": "moe_intermediate_size",
        "num_experts": "num_experts",
        "moe_router_topk": "num_experts_per_tok",
        "moe_layers": "mlp_only_layers",
        "add_qkv_bias": "qkv_bias",
        "moe_shared_expert_intermediate_size": "shared_expert_intermediate_size",
        "moe_shared_expert_gate": "shared_expert_intermediate_size",
    },
    "gpt2": {
        **_COMMON_KEYS,
        "num_layers": "n_layer",
        "hidden_size": "n_embd",
        "ffn_hidden_size": "n_inner",
        "num_attention_heads": "n_head",
        "num_query_groups": "n_head",
        "kv_channels": "n_embd",
        "norm_epsilon": "layer_norm_epsilon",
        "max_position_embeddings": "n_positions",
        "activation": "activation_function",
    },
}
_COMPARED: Final = (
    "num_layers",
    "hidden_size",
    "ffn_hidden_size",
    "num_attention_heads",
    "num_query_groups",
    "kv_channels",
    "rows_vocab",
    "normalization",
    "norm_epsilon",
    "swiglu",
    "position_embedding_type",
    "max_position_embeddings",
    "rotary_base",
    "rope_scaling_factor",
    "rotary_seq_len_interpolation_factor",
    "tied",
    "add_bias_linear",
    "add_qkv_bias",
    "qk_layernorm",
    "num_experts",
    "moe_router_topk",
    "moe_ffn_hidden_size",
    "moe_layers",
    "moe_shared_expert_intermediate_size",
    "moe_shared_expert_gate",
    "activation",
    "params_dtype",
)


def compare_config(config: Mapping[str, Any], arch: Arch, *, source: Any = None) -> list[tuple[str, str, Any, Any]]:
    """Where config.json and the training arguments describe different models.

    Returns (field, config key, value in config.json, value from the args) for each difference.
    """
    family, described = arch_from_config(config, source=source)
    keys = CONFIG_KEYS[family.name]
    out = []
    for name in _COMPARED:
        if name == "ffn_hidden_size" and arch.num_experts and all(arch.moe_layers):
            continue  # no dense MLP exists: the value is unused
        if name in ("rotary_base", "rope_scaling_factor", "rotary_seq_len_interpolation_factor") and (
            arch.position_embedding_type != "rope"
        ):
            continue
        if name == "add_qkv_bias":
            a, b = described.qkv_bias, arch.qkv_bias
        else:
            a, b = getattr(described, name), getattr(arch, name)
        if a != b:
            out.append((name, keys.get(name, name), a, b))
    return out


__all__ += ["CONFIG_KEYS", "compare_config"]
