"""Stock transformers classes that compute exactly what a Megatron GPT computes.

A family is a record: when it applies, its config.json as a table of fields (``hf_config``: read
and written from that one table), and a key table from canonical Megatron names to Hub names
(with the codec that converts between them). The registry is a tuple searched in order; nothing
dispatches on a family's name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import torch

from ..errors import LayoutError, UnsupportedModelError
from ._hf_config import (
    Choice,
    Const,
    Derived,
    DType,
    Fixed,
    Mirror,
    MoeLayers,
    Part,
    Rope,
    Scalar,
    Vocab,
    config_keys,
    read_config,
    write_config,
)
from ._model import Arch
from ._params import Params, check_relations
from ._split_rules import compile_template, format_key
from ._transforms import GATED_SPLIT, GPT2_QKV, GPT2_QKV_BIAS, IDENTITY, QKV_SPLIT, TRANSPOSE, Codec

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
    config: tuple[Part, ...]  # config.json, key by key: read and written from this one table
    extras: tuple[Extra, ...] = ()

    def extras_for(self, arch: Arch) -> list[Extra]:
        return [e for e in self.extras if e.applies(arch)]

    def hf_config(self, arch: Arch, dtype: torch.dtype) -> dict[str, Any]:
        return {
            "architectures": [self.architecture],
            "model_type": self.model_type,
            **write_config(self.config, arch, dtype),
        }

    def read_config(self, c: Params) -> Arch:
        """The model a config.json of this class describes (every key type- and range-checked)."""
        return read_config(self.config, c)

    def config_keys(self) -> dict[str, str]:
        """Arch field -> the config.json key behind it."""
        return config_keys(self.config)

    def map_for(self, canonical_key: str) -> tuple[KeyMap, int | None, int | None]:
        for km in self.keymap:
            m = compile_template(km.canonical).match(canonical_key)
            if m:
                g = m.groupdict()
                return km, _int(g.get("layer")), _int(g.get("expert"))
        raise UnsupportedModelError(f"{self.architecture} has no tensor for this parameter", key=canonical_key)


def _int(x: str | None) -> int | None:
    return None if x is None else int(x)


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


def _mixtral_problems(arch: Arch) -> list[str]:
    out = _rope_problems(arch) + _qk_norm_problems(arch, wanted=False) + _router_problems(arch)
    if not arch.num_experts or not all(arch.moe_layers):
        out.append("Mixtral needs experts in every layer")
    if arch.add_bias_linear or arch.add_qkv_bias:
        out.append("linear biases")
    return out


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

# -- config.json, as data ------------------------------------------------------------------

_SLIDING: Final = "sliding-window attention has no Megatron counterpart here"
_NO_WINDOW_FIX: Final = "turn sliding windows off in config.json if the model was trained with full attention"
# every class: the vocabulary, the tie, the storage dtype, no special-token ids of its own
_ENDS: Final[tuple[Part, ...]] = (
    Vocab(),
    DType(),
    Const("bos_token_id", None),
    Const("eos_token_id", None),
    Const("pad_token_id", None),
)


def _tied(default: bool) -> Part:
    # absent, transformers takes the class's default: tied for GPT-2, untied for the others
    return Scalar("tie_word_embeddings", "tied", "bool", default=default)


def _llama_body(theta: float = 1e4) -> tuple[Part, ...]:
    """What every Llama-style class shares: sizes, RMSNorm, SwiGLU, RoPE (``theta``: the class's base)."""
    return (
        *_ENDS,
        _tied(False),
        Scalar("hidden_size", "hidden_size"),
        Scalar("num_hidden_layers", "num_layers", "count"),
        Scalar("num_attention_heads", "num_attention_heads"),
        Scalar("num_key_value_heads", "num_query_groups", default=lambda got: got["num_attention_heads"]),
        Scalar("head_dim", "kv_channels", default=lambda got: max(got["hidden_size"] // got["num_attention_heads"], 1)),
        Scalar("rms_norm_eps", "norm_epsilon", "eps", default=1e-6),
        Scalar("max_position_embeddings", "max_position_embeddings"),
        Rope(theta),
        Const(
            "hidden_act", "silu", "an MLP activation other than SwiGLU's SiLU has no Megatron counterpart here", "silu"
        ),
        Const("attention_dropout", 0.0),
        Fixed("normalization", "RMSNorm"),
        Fixed("swiglu", True),
        Fixed("position_embedding_type", "rope"),
        Fixed("activation", "silu", key="hidden_act"),
    )


_DENSE_FFN: Final = Scalar("intermediate_size", "ffn_hidden_size")
_QWEN_WINDOW: Final = Const("use_sliding_window", False, _SLIDING, False, _NO_WINDOW_FIX)
_NO_BIASES: Final = Fixed("add_bias_linear", False)
_QK_NORM: Final = (
    Const("attention_bias", False, "attention_bias on every attention projection has no Megatron counterpart", False),
    Fixed("qk_layernorm", True),
)
_EXPERTS: Final = (
    Scalar("num_experts", "num_experts", "count"),
    Scalar("num_experts_per_tok", "moe_router_topk"),
    Scalar("moe_intermediate_size", "moe_ffn_hidden_size"),
    Const(
        "norm_topk_prob",
        True,
        "routing that does not renormalise the top-k probabilities (norm_topk_prob=false) has no Megatron counterpart",
        False,
    ),
    MoeLayers("mlp_only_layers"),
    Const("use_sliding_window", False, _SLIDING, False, _NO_WINDOW_FIX),
    Const("output_router_logits", False),
)

LLAMA_CONFIG: Final[tuple[Part, ...]] = (
    *_llama_body(),
    _DENSE_FFN,
    Scalar("attention_bias", "add_bias_linear", "bool", default=False),
    Mirror("mlp_bias", "add_bias_linear", "attention_bias and mlp_bias differ"),
)
MISTRAL_CONFIG: Final[tuple[Part, ...]] = (
    *_llama_body(),
    _DENSE_FFN,
    _NO_BIASES,
    # MistralConfig's default window is 4096: a Llama without one must write it as null
    Const("sliding_window", None, _SLIDING, 4096, _NO_WINDOW_FIX),
)
QWEN2_CONFIG: Final[tuple[Part, ...]] = (
    *_llama_body(),
    _DENSE_FFN,
    _NO_BIASES,
    Fixed("add_qkv_bias", True),
    _QWEN_WINDOW,
)
QWEN3_CONFIG: Final[tuple[Part, ...]] = (*_llama_body(), _DENSE_FFN, _NO_BIASES, *_QK_NORM, _QWEN_WINDOW)
MIXTRAL_CONFIG: Final[tuple[Part, ...]] = (
    *_llama_body(theta=1e6),
    _NO_BIASES,
    Scalar("intermediate_size", "moe_ffn_hidden_size"),
    Derived("ffn_hidden_size", lambda got: got["moe_ffn_hidden_size"], "intermediate_size"),
    Scalar("num_local_experts", "num_experts", "count"),
    Scalar("num_experts_per_tok", "moe_router_topk"),
    MoeLayers(None),
    Const("router_jitter_noise", 0.0),
    Const("sliding_window", None, _SLIDING, None, _NO_WINDOW_FIX),
    Const("output_router_logits", False),
)
QWEN2_MOE_CONFIG: Final[tuple[Part, ...]] = (
    *_llama_body(),
    _DENSE_FFN,
    _NO_BIASES,
    *_EXPERTS,
    Scalar("qkv_bias", "add_qkv_bias", "bool", default=True),
    Scalar("shared_expert_intermediate_size", "moe_shared_expert_intermediate_size", "size", default=0),
    # Qwen2-MoE always gates its shared expert
    Derived(
        "moe_shared_expert_gate",
        lambda got: bool(got["moe_shared_expert_intermediate_size"]),
        "shared_expert_intermediate_size",
    ),
)
QWEN3_MOE_CONFIG: Final[tuple[Part, ...]] = (*_llama_body(), _DENSE_FFN, _NO_BIASES, *_EXPERTS, *_QK_NORM)
_SCALED: Final = "attention scores scaled otherwise than by 1/sqrt(head_dim)"
GPT2_CONFIG: Final[tuple[Part, ...]] = (
    *_ENDS,
    _tied(True),
    Scalar("n_embd", "hidden_size"),
    Scalar("n_layer", "num_layers", "count"),
    Scalar("n_head", "num_attention_heads", maximum_of="hidden_size"),
    Derived("num_query_groups", lambda got: got["num_attention_heads"], "n_head"),
    Derived("kv_channels", lambda got: got["hidden_size"] // got["num_attention_heads"], "n_embd"),
    Scalar("n_inner", "ffn_hidden_size", default=lambda got: 4 * got["hidden_size"]),
    Scalar("n_positions", "max_position_embeddings"),
    Scalar("layer_norm_epsilon", "norm_epsilon", "eps", default=1e-5),
    Choice(
        "activation_function",
        "activation",
        read_as={"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh"},
        write_as={"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"},
        default="gelu_new",
    ),
    Const("scale_attn_weights", True, _SCALED, True),
    Const("scale_attn_by_inverse_layer_idx", False, _SCALED, False),
    Const("reorder_and_upcast_attn", False),
    Const("resid_pdrop", 0.0),
    Const("embd_pdrop", 0.0),
    Const("attn_pdrop", 0.0),
    Fixed("normalization", "LayerNorm"),
    Fixed("position_embedding_type", "learned_absolute"),
    Fixed("add_bias_linear", True),
)


FAMILIES: Final[tuple[Family, ...]] = (
    Family("llama", "LlamaForCausalLM", "llama", _llama_problems, _DENSE, LLAMA_CONFIG),
    # Mistral without a sliding window is Llama without biases: read (a shipped model may use the
    # class), never chosen to write, since Llama comes first and accepts every model it does.
    Family("mistral", "MistralForCausalLM", "mistral", _mistral_problems, _DENSE, MISTRAL_CONFIG),
    Family("qwen2", "Qwen2ForCausalLM", "qwen2", _qwen2_problems, _DENSE, QWEN2_CONFIG),
    Family("qwen3", "Qwen3ForCausalLM", "qwen3", _qwen3_problems, (*_DENSE, *_qk_norms(_LP)), QWEN3_CONFIG),
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
        MIXTRAL_CONFIG,
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
        QWEN2_MOE_CONFIG,
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
        QWEN3_MOE_CONFIG,
    ),
    Family("gpt2", "GPT2LMHeadModel", "gpt2", _gpt2_problems, _gpt2_keymap(), GPT2_CONFIG),
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


def arch_from_config(config: Mapping[str, Any], *, source: Any = None) -> tuple[Family, Arch]:
    """Read an inference config.json back into the model it describes.

    Every value is type- and range-checked: a wrong one is a LayoutError naming the key.
    """
    fam = family_for_config(config, source=source)
    c = Params(config, source, noun="config.json value", fix="the config and the weights must describe the same model")
    arch = fam.read_config(c)
    keys = CONFIG_KEYS[fam.name]
    check_relations(arch, source=source, key=lambda field: keys.get(field, field))
    return fam, arch


# Arch field -> config.json key, per family (for messages that name the key to fix).
CONFIG_KEYS: Final[dict[str, dict[str, str]]] = {fam.name: fam.config_keys() for fam in FAMILIES}
# The Arch fields config.json and the training arguments must agree on.
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
