"""Model hyperparameters, read from Megatron's recorded arguments.

Megatron records its command line either as ``args`` inside every ``model_optim_rng.pt``
(an ``argparse.Namespace``) or as ``arguments.json`` beside the shards. Argument names are
Megatron's own, with underscores or hyphens.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import torch

from ..errors import LayoutError, UnsupportedModelError

__all__ = [
    "Arch",
    "Layout",
    "Params",
    "arch_from_args",
    "check_relations",
    "layout_from_args",
    "padded_vocab_size",
    "HYPERPARAMETER_ARGS",
]

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

_DTYPES: Final[dict[str, torch.dtype]] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


@dataclass(frozen=True)
class Layout:
    """How the training run split the model: tensor, pipeline and expert parallel sizes."""

    tp: int = 1
    pp: int = 1
    ep: int = 1
    etp: int | None = None  # expert tensor parallel size; None means "same as tp"
    vpp: int = 1  # virtual pipeline chunks per stage

    @property
    def expert_tp(self) -> int:
        return self.tp if self.etp is None else self.etp

    def describe(self) -> str:
        text = f"TP={self.tp} PP={self.pp} EP={self.ep}"
        if self.etp is not None and self.etp != self.tp:
            text += f" ETP={self.etp}"
        if self.vpp > 1:
            text += f" VPP={self.vpp}"
        return text


@dataclass(frozen=True)
class Arch:
    """The function the model computes, independent of how it was split."""

    num_layers: int
    hidden_size: int
    ffn_hidden_size: int
    num_attention_heads: int
    num_query_groups: int
    kv_channels: int
    padded_vocab_size: int
    vocab_size: int | None = None  # true vocabulary size; None when nobody told us
    make_vocab_size_divisible_by: int = 128
    normalization: str = "LayerNorm"
    norm_epsilon: float = 1e-5
    swiglu: bool = False
    position_embedding_type: str = "learned_absolute"
    max_position_embeddings: int = 2048
    rotary_base: float = 10000.0
    rotary_percent: float = 1.0
    rotary_interleaved: bool = False
    # Llama 3.x frequency scaling (Megatron's --use-rope-scaling, --rope-scaling-factor); None: off
    rope_scaling_factor: float | None = None
    # Positions divided by this (Megatron's --rotary-seq-len-interpolation-factor); None: off
    rotary_seq_len_interpolation_factor: float | None = None
    tied: bool = True
    add_bias_linear: bool = True
    add_qkv_bias: bool = False
    qk_layernorm: bool = False
    num_experts: int = 0
    moe_router_topk: int = 2
    moe_ffn_hidden_size: int = 0
    moe_layers: tuple[bool, ...] = ()
    moe_router_pre_softmax: bool = False
    moe_router_score_function: str = "softmax"
    moe_shared_expert_intermediate_size: int = 0
    moe_shared_expert_gate: bool = False  # a sigmoid gate on the shared experts' output
    activation: str = "gelu"  # "silu" (SwiGLU), "gelu" (erf) or "gelu_tanh"
    params_dtype: torch.dtype = torch.float32
    # What the recorded arguments left out that changes the function, and the default taken for
    # it: one line each, naming the argument (said by every command that reads the checkpoint)
    assumed: tuple[str, ...] = dataclasses.field(default=(), compare=False)

    @property
    def qkv_bias(self) -> bool:
        return self.add_bias_linear or self.add_qkv_bias

    @property
    def heads_per_group(self) -> int:
        return self.num_attention_heads // self.num_query_groups

    @property
    def qkv_rows(self) -> int:
        return (self.num_attention_heads + 2 * self.num_query_groups) * self.kv_channels

    @property
    def has_norm_bias(self) -> bool:
        return self.normalization == "LayerNorm"

    @property
    def rows_vocab(self) -> int:
        """Rows the merged embedding has: the true vocab when known, else the padded one."""
        return self.vocab_size if self.vocab_size is not None else self.padded_vocab_size

    def is_moe_layer(self, layer: int) -> bool:
        return bool(self.moe_layers) and self.moe_layers[layer]

    def with_vocab(self, vocab_size: int | None) -> Arch:
        return dataclasses.replace(self, vocab_size=vocab_size)

    def to_args(self, layout: Layout) -> dict[str, Any]:
        """Megatron argument names and values that reproduce this model at ``layout``."""
        args: dict[str, Any] = {
            "num_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "ffn_hidden_size": self.ffn_hidden_size,
            "num_attention_heads": self.num_attention_heads,
            "group_query_attention": self.num_query_groups != self.num_attention_heads,
            "num_query_groups": self.num_query_groups,
            "kv_channels": self.kv_channels,
            "normalization": self.normalization,
            "norm_epsilon": self.norm_epsilon,
            "swiglu": self.swiglu,
            "position_embedding_type": self.position_embedding_type,
            "max_position_embeddings": self.max_position_embeddings,
            "rotary_base": self.rotary_base,
            "rotary_percent": self.rotary_percent,
            "rotary_interleaved": self.rotary_interleaved,
            "untie_embeddings_and_output_weights": not self.tied,
            "add_bias_linear": self.add_bias_linear,
            "add_qkv_bias": self.add_qkv_bias,
            "qk_layernorm": self.qk_layernorm,
            "make_vocab_size_divisible_by": self.make_vocab_size_divisible_by,
            "padded_vocab_size": padded_vocab_size(self.rows_vocab, self.make_vocab_size_divisible_by, layout.tp),
            "openai_gelu": False,
            # Megatron's fused bias-GELU is the tanh approximation; off means exact erf GELU
            "bias_gelu_fusion": self.activation == "gelu_tanh",
            "tensor_model_parallel_size": layout.tp,
            "pipeline_model_parallel_size": layout.pp,
            "expert_model_parallel_size": layout.ep,
            "bf16": self.params_dtype == torch.bfloat16,
            "fp16": self.params_dtype == torch.float16,
            "params_dtype": _dtype_name(self.params_dtype),
        }
        if self.vocab_size is not None:
            args["vocab_size"] = self.vocab_size
        if self.rope_scaling_factor is not None:
            args.update(use_rope_scaling=True, rope_scaling_factor=self.rope_scaling_factor)
        if self.rotary_seq_len_interpolation_factor is not None:
            args["rotary_seq_len_interpolation_factor"] = self.rotary_seq_len_interpolation_factor
        if layout.etp is not None:
            args["expert_tensor_parallel_size"] = layout.etp
        if self.num_experts:
            args.update(
                num_experts=self.num_experts,
                moe_router_topk=self.moe_router_topk,
                moe_ffn_hidden_size=self.moe_ffn_hidden_size,
                # Megatron's default 1 (every layer) when it is so: a list makes megatron-core
                # key torch_dist layers one by one instead of stacking them
                moe_layer_freq=1 if all(self.moe_layers) else [int(x) for x in self.moe_layers],
                moe_router_pre_softmax=self.moe_router_pre_softmax,
                moe_router_score_function=self.moe_router_score_function,
            )
            if self.moe_shared_expert_intermediate_size:
                args.update(
                    moe_shared_expert_intermediate_size=self.moe_shared_expert_intermediate_size,
                    moe_shared_expert_gate=self.moe_shared_expert_gate,
                )
        return args


def padded_vocab_size(vocab: int, divisible_by: int, tp: int) -> int:
    """Megatron's padding: the next multiple of ``divisible_by * tp``.

    >>> padded_vocab_size(50257, 128, 2)
    50432
    """
    multiple = divisible_by * tp
    return int(math.ceil(vocab / multiple) * multiple)


# Bounds on hyperparameters read from a release: beyond them no real model lies, and a value
# past them (1e30 experts, say) would make the converter enumerate or allocate without end.
MAX_DIM: Final = 2**31 - 1  # a width, a vocabulary, a context length
MAX_COUNT: Final = 100_000  # layers and experts, which the converter enumerates


class Params:
    """Typed, checked access to hyperparameters: Megatron's arguments (hyphen or underscore
    names) or a config.json. A value of the wrong type, not finite, or out of range is a
    LayoutError naming the file and the key."""

    def __init__(
        self,
        raw: Mapping[str, Any],
        source: Path,
        *,
        noun: str = "argument",
        fix: str | None = None,
        prefix: str = "",
    ) -> None:
        self._raw = {k.replace("-", "_"): v for k, v in raw.items()}
        self.source = source
        self._noun = noun
        self._prefix = prefix  # before each key named in an error: where a nested object sits
        self._fix = fix or "record the training arguments (Megatron writes them as 'args' or arguments.json)"
        self.assumed: list[builtins.str] = []

    def get(self, name: str, default: Any = None) -> Any:
        value = self._raw.get(name, default)
        return default if value is None else value

    def has(self, name: str) -> bool:
        return self._raw.get(name) is not None

    def assume(self, names: tuple[builtins.str, ...], default: Any, meaning: builtins.str) -> None:
        """Note that none of ``names`` (an argument and its older spellings) is recorded, so the
        function is computed with Megatron's ``default`` for it, which ``meaning`` spells out."""
        if not any(self.has(n) for n in names):
            self.assumed.append(
                f"{names[0]} is not recorded: assumed {default!r} (Megatron's default), {meaning}; "
                f"if the run used another value, add {names[0]} to the arguments (arguments.json)"
            )

    @property
    def raw(self) -> Mapping[str, Any]:
        return self._raw

    def _bad(self, name: str, value: Any, expected: str) -> LayoutError:
        key = self._prefix + name
        return LayoutError(f"{self._noun} {key!r} is {value!r}, expected {expected}", path=self.source, key=key)

    def _missing(self, name: str) -> LayoutError:
        key = self._prefix + name
        return LayoutError(f"required {self._noun} {key!r} is missing", path=self.source, key=key, fix=self._fix)

    def int(self, name: str, default: int | None = None, *, minimum: int = 1, maximum: int = MAX_DIM) -> int:
        value = self.get(name, default)
        if value is None:
            raise self._missing(name)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or int(value) != value
        ):
            raise self._bad(name, value, "an integer")
        if not minimum <= int(value) <= maximum:
            raise self._bad(name, value, f"an integer from {minimum} to {maximum}")
        return int(value)

    def float(self, name: str, default: float | None, *, positive: bool = False) -> float:
        value = self.get(name, default)
        if value is None:
            raise self._missing(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self._bad(name, value, "a finite number")
        if positive and value <= 0:
            raise self._bad(name, value, "a number above 0")
        if value < 0:
            raise self._bad(name, value, "a number of at least 0")
        return float(value)

    def bool(self, name: str, default: bool) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            raise self._bad(name, value, "true or false")
        return value

    def str(self, name: str, default: str) -> str:
        value = self.get(name, default)
        if not isinstance(value, str):
            raise self._bad(name, value, "a string")
        return value

    def ints(self, name: builtins.str, *, below: builtins.int) -> list[builtins.int]:
        """A list of integers from 0 to ``below - 1`` (absent: empty)."""
        value = self.get(name, [])
        if not (isinstance(value, list) and all(type(v) is int and 0 <= v < below for v in value)):
            raise self._bad(name, value, f"a list of integers from 0 to {below - 1}")
        return list(value)


def check_relations(arch: Arch, *, source: Path, key: Callable[[str], str]) -> None:
    """What every model's hyperparameters satisfy together; ``key`` names a field's argument
    or config key in the LayoutError.

    Example:
        >>> arch = Arch(num_layers=1, hidden_size=8, ffn_hidden_size=8, num_attention_heads=4,
        ...     num_query_groups=3, kv_channels=2, padded_vocab_size=8)
        >>> try:
        ...     check_relations(arch, source=Path("args"), key=str)
        ... except LayoutError as e:
        ...     print(e)
        4 attention heads do not split into 3 query groups [args:num_query_groups]
    """
    heads, groups = arch.num_attention_heads, arch.num_query_groups
    if heads % groups:
        raise LayoutError(
            f"{heads} attention heads do not split into {groups} query groups", path=source, key=key("num_query_groups")
        )
    if arch.num_experts and not 1 <= arch.moe_router_topk <= arch.num_experts:
        raise LayoutError(
            f"top-{arch.moe_router_topk} routing over {arch.num_experts} experts",
            path=source,
            key=key("moe_router_topk"),
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
        if name in _DTYPES:
            return _DTYPES[name]
    if a.bool("bf16", False):
        return torch.bfloat16
    if a.bool("fp16", False):
        return torch.float16
    return torch.float32


def _dtype_name(dtype: torch.dtype) -> str:
    return next(name for name, value in _DTYPES.items() if value == dtype)


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
