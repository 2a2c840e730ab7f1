"""The split-rule table: every Megatron GPT parameter, how it is split, and what it is called.

Everything else (which ranks hold which rows, expected shapes, key renaming between dialects)
is derived from ``RULES`` and ``ALIASES``; nothing here is retyped in reverse.

Canonical names are megatron-core's local-spec names with *global* layer and expert indices:
the names a TP=PP=EP=1 megatron-core checkpoint would have.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from ._model import Arch

__all__ = [
    "Split",
    "Fused",
    "Scope",
    "Needs",
    "ParamRule",
    "KeyAlias",
    "RULES",
    "ALIASES",
    "IGNORED_SUFFIXES",
    "LINEAR_MODULES",
    "FUSED_NORMS",
    "extra_state_keys",
    "rule_for",
    "canonical_keys",
    "expected_shape",
    "match_local",
    "compile_template",
    "format_key",
    "Match",
]


class Split(enum.Enum):
    """How tensor parallelism cuts a parameter."""

    REPLICATED = "replicated"  # identical on every rank
    COLUMN = "column"  # output features: dim 0
    ROW = "row"  # input features: dim 1
    VOCAB = "vocab"  # vocabulary rows: dim 0, padded for TP


class Fused(enum.Enum):
    """Several logical matrices stored as one, which changes how dim 0 is cut."""

    NONE = "none"
    # per query group: [q_0..q_{h/g-1}, k, v] (each kv_channels rows), groups across ranks
    QKV = "qkv"
    # SwiGLU fc1: [gate; up] globally, and [gate_r; up_r] on every rank r
    GATED = "gated"


class Scope(enum.Enum):
    """Which pipeline stage holds the parameter."""

    FIRST = "first"
    LAST = "last"
    LAYER = "layer"
    EXPERT = "expert"  # a layer parameter that also belongs to one expert (EP-split)


class Needs(enum.Enum):
    """A condition on the architecture for a parameter to exist."""

    ALWAYS = "always"
    NORM_BIAS = "norm_bias"  # LayerNorm (not RMSNorm)
    QKV_BIAS = "qkv_bias"
    LINEAR_BIAS = "linear_bias"
    QK_NORM = "qk_norm"
    QK_NORM_BIAS = "qk_norm_bias"
    LEARNED_POSITIONS = "learned_positions"
    UNTIED = "untied"
    DENSE_MLP = "dense_mlp"  # a layer without experts
    DENSE_MLP_BIAS = "dense_mlp_bias"
    MOE = "moe"  # a layer with experts
    MOE_BIAS = "moe_bias"
    SHARED_EXPERT = "shared_expert"  # a layer with experts and a shared expert beside them
    SHARED_EXPERT_GATE = "shared_expert_gate"  # ... whose output a sigmoid gate scales


@dataclass(frozen=True)
class ParamRule:
    """One canonical parameter: its name template, split, fusion, stage and shape.

    ``shape`` names symbolic dimensions resolved by :func:`expected_shape`.
    """

    template: str
    split: Split
    scope: Scope
    shape: tuple[str, ...]
    needs: Needs = Needs.ALWAYS
    fused: Fused = Fused.NONE

    @property
    def pattern(self) -> re.Pattern[str]:
        return compile_template(self.template)


@dataclass(frozen=True)
class KeyAlias:
    """A name some Megatron dialect uses for a canonical parameter (stage-local indices)."""

    dialect: str
    local: str
    canonical: str


_L: Final = "decoder.layers.{layer}."
_X: Final = "decoder.layers.{layer}.mlp.experts.local_experts.{expert}."

RULES: Final[tuple[ParamRule, ...]] = (
    ParamRule("embedding.word_embeddings.weight", Split.VOCAB, Scope.FIRST, ("vocab", "hidden")),
    ParamRule(
        "embedding.position_embeddings.weight",
        Split.REPLICATED,
        Scope.FIRST,
        ("positions", "hidden"),
        Needs.LEARNED_POSITIONS,
    ),
    ParamRule(_L + "input_layernorm.weight", Split.REPLICATED, Scope.LAYER, ("hidden",)),
    ParamRule(_L + "input_layernorm.bias", Split.REPLICATED, Scope.LAYER, ("hidden",), Needs.NORM_BIAS),
    ParamRule(
        _L + "self_attention.linear_qkv.weight",
        Split.COLUMN,
        Scope.LAYER,
        ("qkv", "hidden"),
        fused=Fused.QKV,
    ),
    ParamRule(
        _L + "self_attention.linear_qkv.bias",
        Split.COLUMN,
        Scope.LAYER,
        ("qkv",),
        Needs.QKV_BIAS,
        Fused.QKV,
    ),
    ParamRule(_L + "self_attention.q_layernorm.weight", Split.REPLICATED, Scope.LAYER, ("kv",), Needs.QK_NORM),
    ParamRule(_L + "self_attention.q_layernorm.bias", Split.REPLICATED, Scope.LAYER, ("kv",), Needs.QK_NORM_BIAS),
    ParamRule(_L + "self_attention.k_layernorm.weight", Split.REPLICATED, Scope.LAYER, ("kv",), Needs.QK_NORM),
    ParamRule(_L + "self_attention.k_layernorm.bias", Split.REPLICATED, Scope.LAYER, ("kv",), Needs.QK_NORM_BIAS),
    ParamRule(_L + "self_attention.linear_proj.weight", Split.ROW, Scope.LAYER, ("hidden", "attn")),
    ParamRule(_L + "self_attention.linear_proj.bias", Split.REPLICATED, Scope.LAYER, ("hidden",), Needs.LINEAR_BIAS),
    ParamRule(_L + "pre_mlp_layernorm.weight", Split.REPLICATED, Scope.LAYER, ("hidden",)),
    ParamRule(_L + "pre_mlp_layernorm.bias", Split.REPLICATED, Scope.LAYER, ("hidden",), Needs.NORM_BIAS),
    ParamRule(
        _L + "mlp.linear_fc1.weight",
        Split.COLUMN,
        Scope.LAYER,
        ("ffn_in", "hidden"),
        Needs.DENSE_MLP,
        Fused.GATED,
    ),
    ParamRule(_L + "mlp.linear_fc1.bias", Split.COLUMN, Scope.LAYER, ("ffn_in",), Needs.DENSE_MLP_BIAS, Fused.GATED),
    ParamRule(_L + "mlp.linear_fc2.weight", Split.ROW, Scope.LAYER, ("hidden", "ffn"), Needs.DENSE_MLP),
    ParamRule(_L + "mlp.linear_fc2.bias", Split.REPLICATED, Scope.LAYER, ("hidden",), Needs.DENSE_MLP_BIAS),
    ParamRule(_L + "mlp.router.weight", Split.REPLICATED, Scope.LAYER, ("experts", "hidden"), Needs.MOE),
    ParamRule(_X + "linear_fc1.weight", Split.COLUMN, Scope.EXPERT, ("moe_in", "hidden"), Needs.MOE, Fused.GATED),
    ParamRule(_X + "linear_fc1.bias", Split.COLUMN, Scope.EXPERT, ("moe_in",), Needs.MOE_BIAS, Fused.GATED),
    ParamRule(_X + "linear_fc2.weight", Split.ROW, Scope.EXPERT, ("hidden", "moe_ffn"), Needs.MOE),
    ParamRule(_X + "linear_fc2.bias", Split.REPLICATED, Scope.EXPERT, ("hidden",), Needs.MOE_BIAS),
    # Shared experts: a dense MLP on every EP rank, split over TP like the dense one (no biases:
    # Megatron refuses them), and optionally a sigmoid gate scaling its output.
    ParamRule(
        _L + "mlp.shared_experts.linear_fc1.weight",
        Split.COLUMN,
        Scope.LAYER,
        ("shared_in", "hidden"),
        Needs.SHARED_EXPERT,
        Fused.GATED,
    ),
    ParamRule(
        _L + "mlp.shared_experts.linear_fc2.weight",
        Split.ROW,
        Scope.LAYER,
        ("hidden", "shared_ffn"),
        Needs.SHARED_EXPERT,
    ),
    ParamRule(
        _L + "mlp.shared_experts.gate_weight",
        Split.REPLICATED,
        Scope.LAYER,
        ("one", "hidden"),
        Needs.SHARED_EXPERT_GATE,
    ),
    ParamRule("decoder.final_layernorm.weight", Split.REPLICATED, Scope.LAST, ("hidden",)),
    ParamRule("decoder.final_layernorm.bias", Split.REPLICATED, Scope.LAST, ("hidden",), Needs.NORM_BIAS),
    ParamRule("output_layer.weight", Split.VOCAB, Scope.LAST, ("vocab", "hidden"), Needs.UNTIED),
)

_LEGACY_LAYER: Final = ("language_model.encoder.layers.{layer}.", "language_model.transformer.layers.{layer}.")
_LEGACY_FINAL: Final = ("language_model.encoder.", "language_model.transformer.")


def _legacy_aliases() -> Iterator[KeyAlias]:
    per_layer = {
        "input_layernorm": ("input_norm", "input_layernorm"),
        "self_attention.linear_qkv": ("self_attention.query_key_value",),
        "self_attention.linear_proj": ("self_attention.dense",),
        "pre_mlp_layernorm": ("post_attention_norm", "post_attention_layernorm"),
        "mlp.linear_fc1": ("mlp.dense_h_to_4h",),
        "mlp.linear_fc2": ("mlp.dense_4h_to_h",),
        "mlp.router": ("mlp.router",),
        "mlp.experts.local_experts.{expert}.linear_fc1": ("mlp.local_experts.{expert}.dense_h_to_4h",),
        "mlp.experts.local_experts.{expert}.linear_fc2": ("mlp.local_experts.{expert}.dense_4h_to_h",),
    }
    for canonical, locals_ in per_layer.items():
        for prefix in _LEGACY_LAYER:
            for local in locals_:
                for leaf in ("weight", "bias"):
                    yield KeyAlias("legacy", f"{prefix}{local}.{leaf}", f"{_L}{canonical}.{leaf}")
    for prefix in _LEGACY_FINAL:
        for local in ("final_norm", "final_layernorm"):
            for leaf in ("weight", "bias"):
                yield KeyAlias("legacy", f"{prefix}{local}.{leaf}", f"decoder.final_layernorm.{leaf}")
    yield KeyAlias("legacy", "language_model.embedding.word_embeddings.weight", "embedding.word_embeddings.weight")
    yield KeyAlias(
        "legacy", "language_model.embedding.position_embeddings.weight", "embedding.position_embeddings.weight"
    )
    yield KeyAlias("legacy", "language_model.output_layer.weight", "output_layer.weight")
    # the last stage's copy of a tied embedding
    yield KeyAlias("legacy", "word_embeddings_for_head.weight", "output_layer.weight")


# Transformer Engine fuses the norm in front of a linear into that linear; megatron-core's
# torch_dist checkpoints use these names for its local spec too (its sharded_state_dict_keys_map).
FUSED_NORMS: Final[dict[str, str]] = {
    "self_attention.linear_qkv.layer_norm_": "input_layernorm.",
    "mlp.linear_fc1.layer_norm_": "pre_mlp_layernorm.",
}


def _te_aliases() -> Iterator[KeyAlias]:
    for local, canonical in FUSED_NORMS.items():
        for leaf in ("weight", "bias"):
            yield KeyAlias("te", f"{_L}{local}{leaf}", f"{_L}{canonical}{leaf}")
    # TEGroupedMLP: one parameter per local expert, the index glued to the name
    for fc in ("linear_fc1", "linear_fc2"):
        for leaf in ("weight", "bias"):
            yield KeyAlias("te", f"{_L}mlp.experts.{fc}.{leaf}{{expert}}", f"{_X}{fc}.{leaf}")


_TEMPLATES: Final = frozenset(r.template for r in RULES)
ALIASES: Final[tuple[KeyAlias, ...]] = tuple(
    a
    for a in (
        *(KeyAlias("mcore", r.template, r.template) for r in RULES),
        *_te_aliases(),
        *_legacy_aliases(),
    )
    if a.canonical in _TEMPLATES
)

# Keys that carry no weights: Transformer Engine's FP8 metadata, buffers of older versions.
IGNORED_SUFFIXES: Final[tuple[str, ...]] = ("._extra_state", ".inv_freq", ".rotary_pos_emb.inv_freq")

# megatron-core's Column/RowParallelLinear modules (and Transformer Engine's) keep an
# ``_extra_state`` entry in their state dict (None, or TE's FP8 metadata): a strict
# load_state_dict asks for one per linear module, the output layer's even when it is tied.
LINEAR_MODULES: Final[tuple[str, ...]] = ("linear_qkv", "linear_proj", "linear_fc1", "linear_fc2", "output_layer")
EXTRA_STATE: Final = "_extra_state"


def extra_state_keys(local_keys: Iterator[str] | list[str], *, last_stage: bool) -> list[str]:
    """The ``_extra_state`` keys of the linear modules whose parameters are ``local_keys``.

    >>> extra_state_keys(["decoder.layers.0.mlp.linear_fc1.weight", "decoder.layers.0.mlp.linear_fc1.bias",
    ...                   "decoder.final_layernorm.weight"], last_stage=True)
    ['decoder.layers.0.mlp.linear_fc1._extra_state', 'output_layer._extra_state']
    """
    out: dict[str, None] = {}
    for key in local_keys:
        module, _, _ = key.rpartition(".")
        if module.rpartition(".")[2] in LINEAR_MODULES:
            out[f"{module}.{EXTRA_STATE}"] = None
    if last_stage:
        out[f"output_layer.{EXTRA_STATE}"] = None
    return list(out)


@functools.cache
def compile_template(template: str) -> re.Pattern[str]:
    """The regex of a key template: ``{layer}`` and ``{expert}`` match (and capture) indices.

    >>> compile_template("decoder.layers.{layer}.mlp.linear_fc1.weight").match(
    ...     "decoder.layers.7.mlp.linear_fc1.weight").group("layer")
    '7'
    """
    escaped = re.escape(template)
    escaped = escaped.replace(r"\{layer\}", r"(?P<layer>\d+)").replace(r"\{expert\}", r"(?P<expert>\d+)")
    return re.compile(escaped + r"\Z")


@dataclass(frozen=True)
class Match:
    """A local key resolved: its canonical rule, alias and (local) indices."""

    rule: ParamRule
    alias: KeyAlias
    layer: int | None
    expert: int | None

    def canonical(self, layer: int | None, expert: int | None) -> str:
        return format_key(self.rule.template, layer, expert)


def format_key(template: str, layer: int | None, expert: int | None) -> str:
    key = template
    if layer is not None:
        key = key.replace("{layer}", str(layer))
    if expert is not None:
        key = key.replace("{expert}", str(expert))
    return key


_RULE_BY_TEMPLATE: Final[dict[str, ParamRule]] = {r.template: r for r in RULES}
_ALIAS_PATTERNS: Final[tuple[tuple[re.Pattern[str], KeyAlias], ...]] = tuple(
    (compile_template(a.local), a) for a in ALIASES
)
_RULE_PATTERNS: Final[tuple[tuple[re.Pattern[str], ParamRule], ...]] = tuple(
    (compile_template(r.template), r) for r in RULES
)


def match_local(key: str) -> Match | None:
    """Resolve a key as stored in a rank's state dict, in any dialect."""
    for pattern, alias in _ALIAS_PATTERNS:
        m = pattern.match(key)
        if m:
            groups = m.groupdict()
            return Match(
                _RULE_BY_TEMPLATE[alias.canonical],
                alias,
                int(groups["layer"]) if "layer" in groups else None,
                int(groups["expert"]) if "expert" in groups else None,
            )
    return None


def rule_for(canonical_key: str) -> tuple[ParamRule, int | None, int | None]:
    """The rule of a canonical key, with its global layer and expert indices."""
    for pattern, rule in _RULE_PATTERNS:
        m = pattern.match(canonical_key)
        if m:
            g = m.groupdict()
            return (
                rule,
                int(g["layer"]) if "layer" in g else None,
                int(g["expert"]) if "expert" in g else None,
            )
    raise KeyError(canonical_key)


def _present(needs: Needs, arch: Arch, layer: int | None) -> bool:
    moe = layer is not None and arch.is_moe_layer(layer)
    checks = {
        Needs.ALWAYS: True,
        Needs.NORM_BIAS: arch.has_norm_bias,
        Needs.QKV_BIAS: arch.qkv_bias,
        Needs.LINEAR_BIAS: arch.add_bias_linear,
        Needs.QK_NORM: arch.qk_layernorm,
        Needs.QK_NORM_BIAS: arch.qk_layernorm and arch.has_norm_bias,
        Needs.LEARNED_POSITIONS: arch.position_embedding_type == "learned_absolute",
        Needs.UNTIED: not arch.tied,
        Needs.DENSE_MLP: not moe,
        Needs.DENSE_MLP_BIAS: not moe and arch.add_bias_linear,
        Needs.MOE: moe,
        Needs.MOE_BIAS: moe and arch.add_bias_linear,
        Needs.SHARED_EXPERT: moe and arch.moe_shared_expert_intermediate_size > 0,
        Needs.SHARED_EXPERT_GATE: moe and arch.moe_shared_expert_intermediate_size > 0 and arch.moe_shared_expert_gate,
    }
    return checks[needs]


def canonical_keys(arch: Arch) -> list[str]:
    """Every parameter the model has, in forward order (embedding, layers, head)."""
    keys: list[str] = []
    for scope_pass in (Scope.FIRST, Scope.LAYER, Scope.LAST):
        if scope_pass is Scope.LAYER:
            for layer in range(arch.num_layers):
                for rule in RULES:
                    if rule.scope is Scope.LAYER and _present(rule.needs, arch, layer):
                        keys.append(format_key(rule.template, layer, None))
                    elif rule.scope is Scope.EXPERT and _present(rule.needs, arch, layer):
                        keys.extend(format_key(rule.template, layer, e) for e in range(arch.num_experts))
        else:
            keys.extend(r.template for r in RULES if r.scope is scope_pass and _present(r.needs, arch, None))
    return _expert_major(keys)


def _expert_major(keys: list[str]) -> list[str]:
    """Within a layer, order expert parameters expert by expert (fc1, fc2 of expert 0, then 1...)."""
    out: list[str] = []
    pending: list[tuple[int, int, str]] = []
    for i, key in enumerate(keys):
        rule, _, expert = rule_for(key)
        if rule.scope is Scope.EXPERT:
            pending.append((expert or 0, i, key))
            continue
        if pending:
            out.extend(k for _, _, k in sorted(pending))
            pending = []
        out.append(key)
    out.extend(k for _, _, k in sorted(pending))
    return out


def expected_shape(rule: ParamRule, arch: Arch, *, padded_vocab: int | None = None) -> tuple[int, ...]:
    """The full (TP=1) shape of a canonical parameter, vocabulary padded as recorded."""
    gated = 2 if arch.swiglu else 1
    dims = {
        "vocab": padded_vocab if padded_vocab is not None else arch.padded_vocab_size,
        "hidden": arch.hidden_size,
        "positions": arch.max_position_embeddings,
        "qkv": arch.qkv_rows,
        "attn": arch.num_attention_heads * arch.kv_channels,
        "kv": arch.kv_channels,
        "ffn": arch.ffn_hidden_size,
        "ffn_in": gated * arch.ffn_hidden_size,
        "moe_ffn": arch.moe_ffn_hidden_size,
        "moe_in": gated * arch.moe_ffn_hidden_size,
        "experts": arch.num_experts,
        "shared_ffn": arch.moe_shared_expert_intermediate_size,
        "shared_in": gated * arch.moe_shared_expert_intermediate_size,
        "one": 1,
    }
    return tuple(dims[d] for d in rule.shape)


def rules_markdown() -> str:
    """The split-rule table as docs/converter.md shows it (tested to be current there).

    >>> rules_markdown().splitlines()[2].startswith("| `embedding.word_embeddings.weight` | vocab |")
    True
    """
    rows = [
        "| parameter | split | fused | stage | shape | present when |",
        "|---|---|---|---|---|---|",
    ]
    for r in RULES:
        fused = "" if r.fused is Fused.NONE else r.fused.value
        shape = " × ".join(r.shape)
        rows.append(f"| `{r.template}` | {r.split.value} | {fused} | {r.scope.value} | {shape} | {r.needs.value} |")
    return "\n".join(rows) + "\n"


__all__ += ["rules_markdown"]
