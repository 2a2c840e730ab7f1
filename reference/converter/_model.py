"""The model a checkpoint holds, independent of how it is split (``Arch``), and the split (``Layout``).

``Arch.to_args`` gives the Megatron arguments that reproduce a model at a layout; reading them
back is ``megatron.arch_from_args``, reading a config.json ``converter.arch_from_config``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Final

import torch

__all__ = [
    "Arch",
    "Layout",
    "padded_vocab_size",
    "DTYPES",
]


DTYPES: Final[dict[str, torch.dtype]] = {
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


def _dtype_name(dtype: torch.dtype) -> str:
    return next(name for name, value in DTYPES.items() if value == dtype)
