"""The megatron-core fixture matrix: which tiny models are written, at which parallel layouts.

Data, not code: every case is a frozen record; the generator (``mcore_run.py``), the fixtures and
the tests derive everything else (world sizes, padded vocabularies, directory names) from it.
This module imports nothing heavy, so the launcher can read it without torch or megatron.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Final, Literal

#: Megatron-LM iteration the checkpoints are saved at (``iter_0000010``, tracker file ``10``).
ITERATION: Final = 10

#: Rows of the model's embedding that are real tokens (logits are sliced to this width).
#: The checkpoints record it as ``--tokenizer-type NullTokenizer --vocab-size 99``: Megatron-LM's
#: NullTokenizer appends one EOD id, so its vocabulary is ``vocab_size + 1`` = 100 before padding.
VOCAB_SIZE: Final = 100

#: Eval token ids: two sequences of 16 ids in [0, VOCAB_SIZE), both ends of the vocabulary included.
#: Equal lengths, because Megatron's pipeline schedules send fixed [seq, micro_batch, hidden] tensors.
EVAL_IDS: Final[tuple[tuple[int, ...], ...]] = (
    (1, 57, 12, 99, 0, 33, 78, 5, 64, 21, 90, 46, 7, 83, 38, 15),
    (42, 3, 96, 27, 61, 8, 74, 50, 19, 88, 31, 66, 2, 55, 93, 10),
)
SEQ_LENGTH: Final = 16
MAX_POSITION_EMBEDDINGS: Final = 32

FORMATS: Final = ("legacy", "torch_dist")
Format = Literal["legacy", "torch_dist"]


@dataclass(frozen=True)
class Layout:
    """A parallel layout. ``world = tp * pp * dp``; expert parallelism is carved out of ``tp * dp``.

    Expert tensor parallelism equals ``tp`` (Megatron-LM's default), so ``ep`` must divide ``dp``.
    """

    tp: int = 1
    pp: int = 1
    ep: int = 1
    vpp: int | None = None
    dp: int = 1

    @property
    def world(self) -> int:
        """Number of ranks (processes) the layout runs on."""
        return self.tp * self.pp * self.dp

    def label(self) -> str:
        """``tp2-pp2-ep1-vpp2-dp1``: a readable id."""
        return f"tp{self.tp}-pp{self.pp}-ep{self.ep}-vpp{self.vpp or 1}-dp{self.dp}"


@dataclass(frozen=True)
class ModelOptions:
    """Megatron-LM model flags of one case, by their argument names (``args.<name>``).

    ``num_query_groups=None`` means no ``--group-query-attention`` (Megatron-LM then records its
    default ``num_query_groups=1`` and builds multi-head attention).
    """

    num_layers: int = 2
    hidden_size: int = 64
    ffn_hidden_size: int = 128
    num_attention_heads: int = 4
    num_query_groups: int | None = None
    normalization: Literal["LayerNorm", "RMSNorm"] = "LayerNorm"
    norm_epsilon: float = 1e-5
    swiglu: bool = False
    bias_gelu_fusion: bool = False  # mcore's fused bias-GELU is the tanh approximation
    add_bias_linear: bool = True
    add_qkv_bias: bool = False  # Megatron-LM forces it True when add_bias_linear is True
    position_embedding_type: Literal["learned_absolute", "rope"] = "learned_absolute"
    rotary_base: int = 10000
    untie_embeddings_and_output_weights: bool = False
    qk_layernorm: bool = False
    make_vocab_size_divisible_by: int = 128
    num_experts: int | None = None
    moe_router_topk: int = 2
    moe_layer_freq: int | tuple[int, ...] = 1
    moe_ffn_hidden_size: int | None = None
    moe_grouped_gemm: bool = False
    moe_shared_expert_intermediate_size: int | None = None
    moe_shared_expert_gate: bool = False


@dataclass(frozen=True)
class Case:
    """One model at one layout, saved in both checkpoint formats."""

    name: str
    layout: Layout
    model: ModelOptions
    params_dtype: Literal["float32", "bfloat16"] = "float32"
    #: The legacy file's ``args`` as a plain dict (as some converters write), not a Namespace.
    legacy_args_as_dict: bool = False
    about: str = ""


# Llama family: RMSNorm, SwiGLU, RoPE, no biases, untied embeddings, GQA.
LLAMA: Final = ModelOptions(
    num_query_groups=2,
    normalization="RMSNorm",
    norm_epsilon=1e-6,
    swiglu=True,
    add_bias_linear=False,
    position_embedding_type="rope",
    untie_embeddings_and_output_weights=True,
)
# GPT-2 family: LayerNorm, biases, learned absolute positions, tied embeddings, exact GELU.
GPT2: Final = ModelOptions()
# Mixtral-like MoE on the Llama body: 4 experts, top-2, SequentialMLP experts.
MOE: Final = dataclasses.replace(LLAMA, num_experts=4, moe_ffn_hidden_size=64)

CASES: Final[tuple[Case, ...]] = (
    Case("llama_tp1", Layout(), LLAMA, about="GQA 4 heads / 2 groups"),
    Case("llama_tp2", Layout(tp=2), LLAMA),
    Case(
        "llama_tp4_g2",
        Layout(tp=4),
        dataclasses.replace(LLAMA, num_attention_heads=8, make_vocab_size_divisible_by=16),
        about="num_query_groups 2 < TP 4: each rank holds half of a query group's [q.., k, v] rows",
    ),
    Case("llama_tp2_pp2", Layout(tp=2, pp=2), dataclasses.replace(LLAMA, num_layers=4)),
    Case(
        "llama_pp2_vpp2",
        Layout(pp=2, vpp=2),
        dataclasses.replace(LLAMA, num_layers=4),
        about="interleaved schedule: rank p holds layers {p, p+2}, saved as model0/model1",
    ),
    Case("gpt2_tp2", Layout(tp=2), GPT2, about="exact (erf) GELU: --no-bias-gelu-fusion"),
    Case(
        "gpt2_fused_gelu",
        Layout(),
        dataclasses.replace(GPT2, bias_gelu_fusion=True, make_vocab_size_divisible_by=4),
        legacy_args_as_dict=True,
        about="fused bias-GELU = tanh approximation; legacy args stored as a plain dict",
    ),
    Case("gpt2_tied_tp2_pp2", Layout(tp=2, pp=2), GPT2, about="tied embeddings across pipeline stages"),
    Case("moe_tp2", Layout(tp=2), MOE, about="experts split by expert-TP 2, EP 1"),
    Case("moe_ep2", Layout(ep=2, dp=2), MOE, about="EP 2 carved out of DP 2"),
    Case("moe_tp2_ep2", Layout(tp=2, ep=2, dp=2), MOE),
    Case(
        "moe_interleaved_shared_gate",
        Layout(tp=2),
        dataclasses.replace(
            MOE,
            num_layers=4,
            moe_layer_freq=(1, 0, 1, 0),
            moe_shared_expert_intermediate_size=96,
            moe_shared_expert_gate=True,
        ),
        about="MoE on layers 0 and 2, dense MLP on 1 and 3; gated shared expert",
    ),
    Case(
        "moe_shared",
        Layout(),
        dataclasses.replace(MOE, moe_shared_expert_intermediate_size=96),
        about="ungated shared expert",
    ),
    Case(
        "moe_grouped_gemm",
        Layout(ep=2, dp=2),
        dataclasses.replace(MOE, moe_grouped_gemm=True),
        params_dtype="bfloat16",
        about="legacy GroupedMLP (mcore's choice without Transformer Engine); it requires bf16",
    ),
    Case("qk_layernorm", Layout(tp=2), dataclasses.replace(LLAMA, qk_layernorm=True)),
    Case(
        "qkv_bias",
        Layout(tp=2),
        dataclasses.replace(LLAMA, add_qkv_bias=True),
        about="bias on linear_qkv only (--add-qkv-bias --disable-bias-linear)",
    ),
    Case("llama_bf16", Layout(tp=2), LLAMA, params_dtype="bfloat16"),
)

CASES_BY_NAME: Final[dict[str, Case]] = {c.name: c for c in CASES}


def padded_vocab_size(vocab_size: int, divisible_by: int, tp: int) -> int:
    """Megatron-LM's padding: round up to a multiple of ``make_vocab_size_divisible_by * tp``.

    >>> padded_vocab_size(100, 128, 2)
    256
    """
    multiple = divisible_by * tp
    return int(math.ceil(vocab_size / multiple) * multiple)


def case_padded_vocab_size(case: Case, layout: Layout | None = None) -> int:
    """The padded vocabulary of ``case`` at ``layout`` (its own by default)."""
    return padded_vocab_size(VOCAB_SIZE, case.model.make_vocab_size_divisible_by, (layout or case.layout).tp)


def layer_pattern(model: ModelOptions) -> tuple[int, ...]:
    """Megatron's MoE layer pattern: 1 = MoE layer, 0 = dense (``--moe-layer-freq``)."""
    if model.num_experts is None:
        return (0,) * model.num_layers
    if isinstance(model.moe_layer_freq, int):
        return tuple(int(i % model.moe_layer_freq == 0) for i in range(model.num_layers))
    return model.moe_layer_freq
