"""Megatron's recorded arguments read as the model they describe (``Arch``) and its layout.

Megatron records its command line either as ``args`` inside every ``model_optim_rng.pt``
(an ``argparse.Namespace``) or as ``arguments.json`` beside the shards. Argument names are
Megatron's own, with underscores or hyphens.
"""

from __future__ import annotations

import ast
import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import torch

from ..converter._model import DTYPES, Arch, Layout, padded_vocab_size
from ..converter._params import MAX_COUNT, Params, check_relations
from ..errors import LayoutError, UnsupportedModelError

__all__ = ["arch_from_args", "layout_from_args", "HYPERPARAMETER_ARGS", "args_record", "args_disagreements"]


# Arguments that change what the model computes in ways no stock class reproduces, with the
# values that leave it unchanged (what Megatron records when they are off). Any other value
# refuses the conversion naming the argument, rather than writing a model that computes
# something else.
_UNMODELLED: Final[dict[str, tuple[Any, ...]]] = {
    "apply_layernorm_1p": (False,),  # norm weights stored as gamma - 1
    "layernorm_zero_centered_gamma": (False,),
    "apply_residual_connection_post_layernorm": (False,),
    "window_size": (None, (-1, -1), [-1, -1]),  # sliding-window attention
    "qk_l2_norm": (False,),
    "multi_latent_attention": (False,),
    "moe_router_topk_scaling_factor": (None, 1, 1.0),
    "moe_router_num_groups": (None, 1),  # group-limited routing
    "moe_router_group_topk": (None,),
    "moe_router_enable_expert_bias": (False,),
    "attention_output_gate": (False,),
    "softmax_scale": (None,),
}

# Every argument the converter reads; anything else in ``args`` is ignored.
HYPERPARAMETER_ARGS: Final[frozenset[str]] = frozenset(
    """add_bias_linear add_qkv_bias bias_activation_fusion bias_gelu_fusion expert_model_parallel_size
    expert_tensor_parallel_size ffn_hidden_size group_query_attention hidden_size kv_channels layernorm_epsilon
    make_vocab_size_divisible_by max_position_embeddings moe_ffn_hidden_size moe_layer_freq moe_router_pre_softmax
    moe_router_score_function moe_router_topk moe_shared_expert_intermediate_size moe_shared_expert_gate
    norm_epsilon normalization
    num_attention_heads num_experts num_layers num_layers_per_virtual_pipeline_stage num_query_groups openai_gelu
    padded_vocab_size params_dtype pipeline_model_parallel_size position_embedding_type qk_layernorm rotary_base
    rotary_interleaved rotary_percent seq_length squared_relu swiglu tensor_model_parallel_size
    untie_embeddings_and_output_weights virtual_pipeline_model_parallel_size vocab_size bf16 fp16
    use_rope_scaling rope_scaling_factor rotary_scaling_factor rotary_seq_len_interpolation_factor
    use_rotary_position_embeddings""".split()
    + list(_UNMODELLED)
)


def layout_from_args(raw: Mapping[str, Any], *, source: Path) -> Layout:
    """The parallel layout recorded in Megatron's arguments."""
    a = Params(raw, source)
    count = {"maximum": MAX_COUNT}
    etp = a.int("expert_tensor_parallel_size", **count) if a.has("expert_tensor_parallel_size") else None
    vpp = (
        a.int("virtual_pipeline_model_parallel_size", **count)
        if a.has("virtual_pipeline_model_parallel_size")
        else None
    )
    if vpp is None and a.has("num_layers_per_virtual_pipeline_stage"):
        per_chunk = a.int("num_layers_per_virtual_pipeline_stage", **count)
        vpp = a.int("num_layers", **count) // (per_chunk * a.int("pipeline_model_parallel_size", 1, **count))
    return Layout(
        tp=a.int("tensor_model_parallel_size", 1, **count),
        pp=a.int("pipeline_model_parallel_size", 1, **count),
        ep=a.int("expert_model_parallel_size", 1, **count),
        etp=etp,
        vpp=vpp or 1,
    )


def arch_from_args(raw: Mapping[str, Any], *, source: Path, vocab_size: int | None = None) -> Arch:
    """The model hyperparameters recorded in Megatron's arguments.

    Args:
        raw: ``vars(args)`` or the parsed ``arguments.json``.
        source: The file they came from, named in errors.
        vocab_size: The true vocabulary size, if the caller knows it better than the args.

    Example:
        >>> arch = arch_from_args({"num_layers": 2, "hidden_size": 64,
        ...     "num_attention_heads": 4, "padded_vocab_size": 256}, source=Path("args"))
        >>> arch.ffn_hidden_size, arch.kv_channels
        (256, 16)
    """
    a = Params(raw, source)
    hidden = a.int("hidden_size")
    heads = a.int("num_attention_heads")
    layers = a.int("num_layers", maximum=MAX_COUNT)
    # Megatron reads num_query_groups only with --group-query-attention, and records its default
    # (1) without it: a recorded flag decides. Without the flag, groups other than heads mean GQA.
    if a.has("group_query_attention"):
        gqa = a.bool("group_query_attention", False)
    else:
        gqa = a.has("num_query_groups") and a.int("num_query_groups") != heads
    groups = a.int("num_query_groups", heads) if gqa else heads
    kv_channels = a.int("kv_channels", max(hidden // heads, 1))
    swiglu = a.bool("swiglu", False)
    ffn = a.int("ffn_hidden_size", 4 * hidden if not swiglu else None)
    normalization = str(a.get("normalization", "LayerNorm"))
    if normalization not in ("LayerNorm", "RMSNorm"):
        raise UnsupportedModelError(
            f"normalization {normalization!r} is not LayerNorm or RMSNorm",
            path=source,
            key="normalization",
        )
    eps = a.float("norm_epsilon", a.float("layernorm_epsilon", 1e-5))
    # The legacy flag wins, as in Megatron's validate_args (and before --position-embedding-type
    # existed, it was the only record of rotary embeddings)
    if a.bool("use_rotary_position_embeddings", False):
        position = "rope"
    else:
        position = str(a.get("position_embedding_type", "learned_absolute"))
    for name, neutral in _UNMODELLED.items():
        if a.get(name, neutral[0]) not in neutral:
            raise UnsupportedModelError(
                f"{name}={a.get(name)!r} changes what the model computes in a way no stock transformers "
                "class reproduces",
                path=source,
                key=name,
                fix="convert with a custom modeling class; the converter never writes an approximation",
            )
    interpolation = a.get("rotary_seq_len_interpolation_factor")
    divisible = a.int("make_vocab_size_divisible_by", 128)
    layout = layout_from_args(raw, source=source)
    true_vocab = vocab_size if vocab_size is not None else _recorded_vocab(a)
    if a.has("padded_vocab_size"):
        padded = a.int("padded_vocab_size")
    elif true_vocab is not None:
        padded = padded_vocab_size(true_vocab, divisible, layout.tp)
    else:
        raise LayoutError(
            "neither 'padded_vocab_size' nor 'vocab_size' is recorded",
            path=source,
            key="padded_vocab_size",
            fix="pass --vocab-size or --tokenizer",
        )
    if true_vocab is not None and true_vocab > padded:
        raise LayoutError(
            f"true vocab size {true_vocab} exceeds the padded vocab size {padded}",
            path=source,
            key="padded_vocab_size",
            fix="pass the vocabulary size of the tokenizer the model was trained with",
        )
    num_experts = a.int("num_experts", 0, minimum=0, maximum=MAX_COUNT)
    moe_layers: tuple[bool, ...] = ()
    if num_experts:
        moe_layers = _moe_layer_pattern(a.get("moe_layer_freq", 1), layers, source)
    params_dtype = _params_dtype(a)
    shared = a.int("moe_shared_expert_intermediate_size", 0, minimum=0) if num_experts else 0
    if a.bool("squared_relu", False):
        raise UnsupportedModelError(
            "squared_relu MLPs have no stock transformers equivalent", path=source, key="squared_relu"
        )
    arch = Arch(
        num_layers=layers,
        hidden_size=hidden,
        ffn_hidden_size=ffn,
        num_attention_heads=heads,
        num_query_groups=groups,
        kv_channels=kv_channels,
        padded_vocab_size=padded,
        vocab_size=true_vocab,
        make_vocab_size_divisible_by=divisible,
        normalization=normalization,
        norm_epsilon=eps,
        swiglu=swiglu,
        position_embedding_type=position,
        max_position_embeddings=a.int("max_position_embeddings", a.int("seq_length", 2048)),
        rotary_base=a.float("rotary_base", 10000.0, positive=True),
        rotary_percent=a.float("rotary_percent", 1.0, positive=True),
        rotary_interleaved=a.bool("rotary_interleaved", False),
        rope_scaling_factor=_rope_scaling_factor(a),
        rotary_seq_len_interpolation_factor=(
            a.float("rotary_seq_len_interpolation_factor", 1.0, positive=True) if interpolation is not None else None
        ),
        tied=not a.bool("untie_embeddings_and_output_weights", False),
        add_bias_linear=a.bool("add_bias_linear", True),
        add_qkv_bias=a.bool("add_qkv_bias", False),
        qk_layernorm=a.bool("qk_layernorm", False),
        num_experts=num_experts,
        moe_router_topk=a.int("moe_router_topk", 2),
        moe_ffn_hidden_size=a.int("moe_ffn_hidden_size", ffn) if num_experts else 0,
        moe_layers=moe_layers,
        moe_router_pre_softmax=a.bool("moe_router_pre_softmax", False),
        moe_router_score_function=str(a.get("moe_router_score_function", "softmax")),
        moe_shared_expert_intermediate_size=shared,
        moe_shared_expert_gate=bool(shared) and a.bool("moe_shared_expert_gate", False),
        activation=_activation(a, swiglu),
        params_dtype=params_dtype,
    )
    check_relations(arch, source=source, key=str)
    _note_assumptions(a, arch)
    return dataclasses.replace(arch, assumed=tuple(a.assumed))


def _recorded_vocab(a: Params) -> int | None:
    """The true vocabulary size the args record, if any. Megatron's ``--vocab-size`` is the size
    "before EOD or padding", read only by its NullTokenizer, which adds the EOD token after it."""
    if not a.has("vocab_size"):
        return None
    size = a.int("vocab_size")
    return size + 1 if a.get("tokenizer_type") == "NullTokenizer" else size


def _note_assumptions(a: Params, arch: Arch) -> None:
    """The defaults this model's function rests on when its arguments do not record them."""
    a.assume(("normalization",), "LayerNorm", f"so the norms are {arch.normalization}")
    a.assume(("norm_epsilon", "layernorm_epsilon"), 1e-5, "the norms' epsilon")
    a.assume(("swiglu",), False, "so the MLP is not gated")
    a.assume(("untie_embeddings_and_output_weights",), False, "so the output layer is the embedding")
    a.assume(("add_bias_linear",), True, "so the linear layers have biases")
    if not a.bool("use_rotary_position_embeddings", False):
        a.assume(("position_embedding_type",), "learned_absolute", f"so positions are {arch.position_embedding_type}")
    if arch.position_embedding_type == "rope":
        a.assume(("rotary_base",), 10000, "the RoPE base")
    if arch.activation != "silu" and arch.add_bias_linear and not a.bool("openai_gelu", False):
        a.assume(
            ("bias_gelu_fusion", "bias_activation_fusion"),
            True,
            f"so the MLP's GELU is the fused bias-GELU's tanh approximation ({arch.activation})",
        )


def _rope_scaling_factor(a: Params) -> float | None:
    """Megatron's Llama 3.x scaling factor (``rope_scaling_factor``, earlier
    ``rotary_scaling_factor``; default 8), or None when ``use_rope_scaling`` is off."""
    if not a.bool("use_rope_scaling", False):
        return None
    return a.float("rope_scaling_factor", a.float("rotary_scaling_factor", 8.0, positive=True), positive=True)


def _activation(a: Params, swiglu: bool) -> str:
    """Exact (erf) or tanh GELU: Megatron's fused bias-GELU (on by default) is the tanh one."""
    if swiglu:
        return "silu"
    fused = a.bool("bias_gelu_fusion", a.bool("bias_activation_fusion", True)) and a.bool("add_bias_linear", True)
    return "gelu_tanh" if a.bool("openai_gelu", False) or fused else "gelu"


def _params_dtype(a: Params) -> torch.dtype:
    value = a.get("params_dtype")
    if isinstance(value, torch.dtype):
        return value
    if isinstance(value, str):
        name = value.removeprefix("torch.")
        if name in DTYPES:
            return DTYPES[name]
    if a.bool("bf16", False):
        return torch.bfloat16
    if a.bool("fp16", False):
        return torch.float16
    return torch.float32


def _moe_layer_pattern(value: Any, num_layers: int, source: Path) -> tuple[bool, ...]:
    """Megatron's ``--moe-layer-freq``: an int N (layer i is MoE iff i % N == 0) or a pattern."""
    if isinstance(value, str):
        value = _literal_pattern(value, source)
    if isinstance(value, bool) or not isinstance(value, (int, list, tuple)):
        raise LayoutError(f"moe_layer_freq {value!r} is not an integer or a list", path=source, key="moe_layer_freq")
    if isinstance(value, int):
        if value < 1:
            raise LayoutError(f"moe_layer_freq {value} must be >= 1", path=source, key="moe_layer_freq")
        return tuple(i % value == 0 for i in range(num_layers))
    if len(value) != num_layers or any(x not in (0, 1) for x in value):
        raise LayoutError(
            f"moe_layer_freq pattern has {len(value)} entries of 0/1, expected {num_layers}",
            path=source,
            key="moe_layer_freq",
        )
    return tuple(bool(x) for x in value)


def _literal_pattern(text: str, source: Path) -> int | list[int]:
    """Evaluate Megatron's pattern strings like ``([1]*1+[0]*1)*12`` without ``eval``."""

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            return [ev(e) for e in node.elts]
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = ev(node.left), ev(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(ast.dump(node))

    try:
        result = ev(ast.parse(text, mode="eval"))
    except (SyntaxError, ValueError, TypeError) as e:
        raise LayoutError(f"moe_layer_freq {text!r} is not a list pattern", path=source, key="moe_layer_freq") from e
    if not isinstance(result, (int, list)):
        raise LayoutError(f"moe_layer_freq {text!r} is not a list pattern", path=source, key="moe_layer_freq")
    return result


def args_record(args: Mapping[str, Any]) -> dict[str, Any]:
    """The training arguments as ``arguments.json`` holds them: JSON values, types by name
    (``torch.float32`` as ``"torch.float32"``), keys sorted.

    Example:
        >>> import torch
        >>> args_record({"num_layers": 2, "params_dtype": torch.bfloat16})
        {'num_layers': 2, 'params_dtype': 'torch.bfloat16'}
    """
    return json.loads(json.dumps(dict(args), default=str, sort_keys=True))


def args_disagreements(recorded: Mapping[str, Any], other: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(name, in recorded, in other)`` for each hyperparameter ``recorded`` sets that ``other``
    lacks (``None`` there) or sets differently (compared as JSON values).

    Example:
        >>> args_disagreements({"num_layers": 2, "lr": 1e-3}, {"num_layers": 4})
        [('num_layers', 2, 4)]
    """
    a, b = args_record(recorded), args_record(other)
    return [
        (name, a[name], b.get(name))
        for name in sorted(HYPERPARAMETER_ARGS & a.keys())
        if a[name] is not None and (name not in b or b[name] != a[name])
    ]
