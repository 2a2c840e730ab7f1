"""Megatron-LM's ``args`` for a fixture case, and the TransformerConfig Megatron-LM derives from them.

Mirrors Megatron-LM core_v0.16.1 ``megatron/training/arguments.py``: ``parse_args`` (defaults of
every argument a checkpoint reader may look at) followed by ``validate_args`` (the values it
derives), then ``core_transformer_config_from_args``. Since 0.16 most model flags are generated
from megatron-core's own ``TransformerConfig`` dataclass (``ArgumentGroupFactory``): their
``args`` names are the dataclass field names, e.g. ``--norm-epsilon`` is stored as
``args.layernorm_epsilon``. Those defaults are read from the installed dataclass, as Megatron-LM
does; the hand-written argument groups are retyped below (names and defaults only).

Other releases (``mcore_release.RELEASES``) take every default from their recorded ``parse_args``
(``mcore_lm_args-<version>.json``), their own argument names (0.13.1: ``args.norm_epsilon``) and
the TransformerConfig fields their ``core_transformer_config_from_args`` sets.

:func:`args_from_checkpoint` is Megatron-LM's ``--use-checkpoint-args``: a model described by the
args a checkpoint recorded rather than by a case.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from typing import Any, Final

import torch
import torch.nn.functional as F
from megatron.core.transformer import enums as transformer_enums
from megatron.core.transformer.transformer_config import TransformerConfig

# isort: split
from mcore_cases import MAX_POSITION_EMBEDDINGS, SEQ_LENGTH, VOCAB_SIZE, Case, Format, Layout, padded_vocab_size
from mcore_release import Release, installed

# TransformerConfig fields Megatron-LM 0.16.1 does not turn into arguments (the ``exclude`` list
# of _add_network_size_args): callables, typed elsewhere, or defined by a hand-written argument.
_NOT_FROM_CONFIG: Final = frozenset(
    {
        "timers", "finalize_model_grads_func", "grad_scale_func", "no_sync_func", "grad_sync_func",
        "param_sync_func", "_cpu_offloading_context", "init_method", "output_layer_init_method",
        "embedding_init_method", "activation_func", "pipeline_model_parallel_layout", "window_size",
        "window_attn_skip_freq", "no_rope_freq", "moe_layer_freq", "linear_attention_freq",
        "moe_router_load_balancing_type", "moe_aux_loss_coeff", "cp_comm_type", "cuda_graph_scope",
        "virtual_pipeline_model_parallel_size", "params_dtype", "enable_autocast", "autocast_dtype",
        "num_microbatches_with_partial_activation_checkpoints", "tp_comm_overlap_disable_qkv",
        "tp_comm_overlap_disable_fc1", "pipeline_dtype", "variable_seq_lengths", "batch_p2p_comm",
        "batch_p2p_sync", "deallocate_pipeline_outputs", "cpu_offloading", "cpu_offloading_activations",
        "cpu_offloading_weights", "cpu_offloading_double_buffering", "num_layers_in_first_pipeline_stage",
        "num_layers_in_last_pipeline_stage", "softmax_scale", "gated_linear_unit", "bias_activation_fusion",
        "activation_func_fp8_input_store", "test_mode", "memory_efficient_layer_norm",
        "fused_single_qkv_rope", "fp8_dot_product_attention", "fp8_multi_head_attention",
        "tp_only_amax_red", "use_kitchen", "moe_token_dropping", "cuda_graph_use_single_mempool",
        "cuda_graph_retain_backward_graph", "disable_parameter_transpose_cache", "inference_sampling_seed",
        "use_inference_optimized_layers", "heterogeneous_block_specs", "hetereogenous_dist_checkpoint",
        "quant_recipe", "tp_comm_atomic_ag", "tp_comm_atomic_rs", "moe_router_topk_limited_devices",
        "inference_rng_tracker", "use_te_rng_tracker", "log_max_attention_logit", "barrier_with_L1_time",
        "num_moe_experts", "fp8_param", "gradient_accumulation_fusion", "overlap_p2p_comm",
        "attention_softmax_in_fp32", "masked_softmax_fusion", "persist_layer_norm",
        "bias_dropout_fusion", "apply_rope_fusion",
    }
)  # fmt: skip

# Hand-written Megatron-LM arguments (dest: default) a checkpoint reader or loader may consult.
_HAND_WRITTEN_DEFAULTS: Final[dict[str, Any]] = {
    # network size
    "encoder_num_layers": None, "decoder_num_layers": None, "group_query_attention": False,
    "window_size": None, "window_attn_skip_freq": None, "max_position_embeddings": None,
    "position_embedding_type": "learned_absolute", "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128, "use_rotary_position_embeddings": False,
    "rotary_base": 10000, "rotary_percent": 1.0, "rotary_seq_len_interpolation_factor": None,
    "use_rope_scaling": False, "rope_scaling_factor": 8.0, "no_rope_freq": None,
    "add_position_embedding": True, "make_vocab_size_divisible_by": 128, "openai_gelu": False,
    "squared_relu": False, "swiglu": False, "quick_geglu": False, "onnx_safe": None,
    "bert_binary_head": True, "untie_embeddings_and_output_weights": False,
    # moe
    "num_experts": None, "moe_layer_freq": 1, "moe_use_upcycling": False,
    "moe_router_load_balancing_type": "aux_loss", "moe_aux_loss_coeff": 0.0,
    "moe_upcycling_granularity": 1, "moe_pad_experts_for_cuda_graph_inference": False,
    # training (hand-written part of _add_training_args)
    "micro_batch_size": None, "global_batch_size": None, "train_iters": None, "train_samples": None,
    "recompute_granularity": None, "recompute_method": None, "check_for_nan_in_loss_and_grad": True,
    "check_for_large_grads": False, "enable_gloo_process_groups": True, "masked_softmax_fusion": True,
    "bias_gelu_fusion": True, "bias_swiglu_fusion": True, "bias_dropout_fusion": True,
    "apply_rope_fusion": True, "rope_type": None, "use_flash_attn": False, "optimizer": "adam",
    "dataloader_type": None, "no_persist_layer_norm": False, "gradient_accumulation_fusion": True,
    "deprecated_use_mcore_models": False, "use_legacy_models": False, "disable_jit_fuser": False,
    "spec": None, "yaml_cfg": None, "experimental_attention_variant": None, "qk_l2_norm": False,
    "multi_latent_attention": False, "heterogeneous_layers_config_path": None,
    "heterogeneous_layers_config_encoded_json": None, "mtp_num_layers": None, "is_hybrid_model": False,
    "moe_use_legacy_grouped_gemm": False, "moe_latent_size": None, "init_method_xavier_uniform": False,
    "config_logger_dir": "",
    # Transformer-Engine
    "fp8_param_gather": False, "te_precision_config_file": None,
    # regularization, learning rate, validation
    "weight_decay": 0.01, "start_weight_decay": None, "end_weight_decay": None,
    "weight_decay_incr_style": "constant", "clip_grad": 1.0, "adam_beta1": 0.9, "adam_beta2": 0.999,
    "adam_eps": 1e-08, "sgd_momentum": 0.9, "lr": None, "min_lr": 0.0, "lr_decay_style": "linear",
    "lr_warmup_iters": 0, "lr_warmup_fraction": None, "eval_iters": 100, "eval_interval": 1000,
    # RNG and initialization
    "seed": 1234, "data_parallel_random_init": False,
    # mixed precision
    "grad_reduce_in_bf16": False, "loss_scale": None, "initial_loss_scale": 2**32,
    "min_loss_scale": 1.0, "loss_scale_window": 1000, "hysteresis": 2,
    "attention_softmax_in_fp32": False, "accumulate_allreduce_grads_in_fp32": False,
    "fp16_lm_cross_entropy": False, "main_grads_dtype": "fp32", "main_params_dtype": "fp32",
    "exp_avg_dtype": "fp32", "exp_avg_sq_dtype": "fp32",
    # distributed
    "decoder_first_pipeline_num_layers": None, "decoder_last_pipeline_num_layers": None,
    "pipeline_model_parallel_layout": None, "model_parallel_size": None,
    "num_layers_per_virtual_pipeline_stage": None, "num_virtual_stages_per_pipeline_rank": None,
    "overlap_p2p_comm": True, "distributed_backend": "nccl", "distributed_timeout_minutes": 10,
    "overlap_grad_reduce": False, "overlap_param_gather": False, "align_grad_reduce": True,
    "align_param_gather": True, "local_rank": 0, "use_distributed_optimizer": False,
    "use_megatron_fsdp": False, "use_torch_fsdp2": False, "data_parallel_sharding_strategy": "no_shard",
    "num_distributed_optimizer_instances": 1, "cp_comm_type": ["p2p"],
    "hierarchical_context_parallel_sizes": None, "use_tp_pp_dp_mapping": False,
    "fake_process_group": False,
    # checkpointing
    "save": None, "save_interval": None, "load": None, "pretrained_checkpoint": None,
    "ckpt_step": None, "finetune": False, "use_checkpoint_args": False,
    "use_mp_args_from_checkpoint_args": False, "use_tokenizer_model_from_checkpoint_args": True,
    "exit_on_missing_checkpoint": False, "ckpt_format": "torch_dist", "auto_detect_ckpt_format": False,
    "ckpt_fully_parallel_save": True, "ckpt_fully_parallel_load": False,
    "ckpt_assume_constant_structure": False, "async_save": False, "use_persistent_ckpt_worker": False,
    "dist_ckpt_strictness": "assume_ok_unexpected", "non_persistent_ckpt_type": None,
    "non_persistent_global_ckpt_dir": None, "no_save_optim": None, "no_save_rng": None,
    "no_load_optim": None, "no_load_rng": None, "use_dist_ckpt_deprecated": False,
    "dist_ckpt_format_deprecated": None, "ckpt_fully_parallel_save_deprecated": False,
    # tokenizer
    "vocab_size": None, "padded_vocab_size": None, "vocab_file": None, "merge_file": None,
    "vocab_extra_ids": 0, "tokenizer_type": None, "tokenizer_model": None, "legacy_tokenizer": False,
    "tiktoken_pattern": None,
}  # fmt: skip

_DTYPES: Final = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _config_field_defaults() -> dict[str, Any]:
    """``dest: default`` of the arguments Megatron-LM generates from TransformerConfig's fields."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(TransformerConfig):
        if f.name in _NOT_FROM_CONFIG or not f.init:
            continue
        meta = f.metadata.get("argparse_meta", {})
        if "default" in meta:
            out[f.name] = meta["default"]
        elif f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        else:
            out[f.name] = f.default_factory()  # type: ignore[misc]
    return out


# --no-masked-softmax-fusion --no-bias-swiglu-fusion --no-bias-dropout-fusion --no-rope-fusion
# --no-gradient-accumulation-fusion --no-persist-layer-norm: the unfused paths are the ones that run
# on CPU (the same functions); dropout 0, local (not Transformer Engine) modules, CPU weights, gloo.
_CPU_FLAGS: Final[dict[str, Any]] = {
    "masked_softmax_fusion": False,
    "bias_swiglu_fusion": False,
    "bias_dropout_fusion": False,
    "apply_rope_fusion": False,
    "gradient_accumulation_fusion": False,
    "no_persist_layer_norm": True,
    "hidden_dropout": 0.0,
    "attention_dropout": 0.0,
    "transformer_impl": "local",
    "use_cpu_initialization": True,
    "distributed_backend": "gloo",
}


def _release_defaults(release: Release) -> dict[str, Any]:
    """``dest: default`` of every argument of ``release``'s ``parse_args``."""
    recorded = release.lm_defaults()
    if recorded is None:
        return _config_field_defaults() | _HAND_WRITTEN_DEFAULTS
    # lm_args_dump.py writes enum defaults by class and member name
    return {
        k: getattr(transformer_enums, v["enum"])[v["name"]] if isinstance(v, dict) and "enum" in v else v
        for k, v in recorded.items()
    }


def _as_release(flags: dict[str, Any], release: Release) -> dict[str, Any]:
    """A command line in 0.16.1's names as ``release`` spells it (names, list-valued arguments)."""
    out = {}
    for name, value in flags.items():
        out[release.lm_arg(name)] = [value] if name in release.list_args and not isinstance(value, list) else value
    return out


def _command_line(case: Case, layout: Layout, ckpt_format: Format) -> dict[str, Any]:
    """What the case's Megatron-LM command line sets (``--flag value`` as ``dest: value``, 0.16.1's names)."""
    m = case.model
    flags: dict[str, Any] = {
        "num_layers": m.num_layers,
        "hidden_size": m.hidden_size,
        "ffn_hidden_size": m.ffn_hidden_size,
        "num_attention_heads": m.num_attention_heads,
        "max_position_embeddings": MAX_POSITION_EMBEDDINGS,
        "seq_length": SEQ_LENGTH,
        "position_embedding_type": m.position_embedding_type,
        "rotary_base": m.rotary_base,
        "normalization": m.normalization,
        "layernorm_epsilon": m.norm_epsilon,
        "swiglu": m.swiglu,
        "add_bias_linear": m.add_bias_linear,
        "add_qkv_bias": m.add_qkv_bias,
        "qk_layernorm": m.qk_layernorm,
        "untie_embeddings_and_output_weights": m.untie_embeddings_and_output_weights,
        "make_vocab_size_divisible_by": m.make_vocab_size_divisible_by,
        "bias_gelu_fusion": m.bias_gelu_fusion,
        **_CPU_FLAGS,
        "tensor_model_parallel_size": layout.tp,
        "pipeline_model_parallel_size": layout.pp,
        "expert_model_parallel_size": layout.ep,
        "micro_batch_size": 1,
        "global_batch_size": 2 * layout.dp,
        "train_iters": 10,
        "lr": 1e-4,
        "save_interval": 10,
        # No optimizer state is saved (as with --no-save-optim): megatron-core's optimizers
        # allocate on a CUDA device unconditionally (see README), so these models are not trained.
        "no_save_optim": True,
        "eval_iters": 1,
        "ckpt_format": "torch" if ckpt_format == "legacy" else "torch_dist",
        "tokenizer_type": "NullTokenizer",
        "vocab_size": VOCAB_SIZE - 1,  # NullTokenizer adds the EOD id
        "bf16": case.params_dtype == "bfloat16",
    }
    if m.num_query_groups is not None:
        flags |= {"group_query_attention": True, "num_query_groups": m.num_query_groups}
    if layout.vpp is not None:
        flags["num_layers_per_virtual_pipeline_stage"] = m.num_layers // (layout.pp * layout.vpp)
    if m.num_experts is not None:
        flags |= {
            "num_experts": m.num_experts,
            "moe_router_topk": m.moe_router_topk,
            # moe_freq_type evaluates a pattern string such as "([1,0]*2)" to a list
            "moe_layer_freq": m.moe_layer_freq if isinstance(m.moe_layer_freq, int) else list(m.moe_layer_freq),
            "moe_ffn_hidden_size": m.moe_ffn_hidden_size,
            "moe_grouped_gemm": m.moe_grouped_gemm,
            "moe_shared_expert_intermediate_size": m.moe_shared_expert_intermediate_size,
            # 0.16 parses it with nargs='+' (a list; validate_args unwraps a single entry)
            "moe_router_load_balancing_type": "aux_loss",
        }
    if m.moe_shared_expert_gate:  # a flag 0.13's Megatron-LM does not have
        flags["moe_shared_expert_gate"] = True
    return flags


def _validate(args: argparse.Namespace, world_size: int) -> None:
    """The part of Megatron-LM's ``validate_args`` (and tokenizer set-up) these models reach."""
    args.rank = 0
    args.world_size = world_size
    args.use_dist_ckpt = args.ckpt_format != "torch"
    model_size = args.tensor_model_parallel_size * args.pipeline_model_parallel_size * args.context_parallel_size
    args.transformer_pipeline_model_parallel_size = args.pipeline_model_parallel_size
    args.data_parallel_size = world_size // model_size
    if args.expert_tensor_parallel_size is None:
        args.expert_tensor_parallel_size = args.tensor_model_parallel_size
    for deprecated in (
        "batch_size",
        "warmup",
        "model_parallel_size",
        "checkpoint_activations",
        "recompute_activations",
    ):
        args.__dict__.pop(deprecated, None)
    if args.global_batch_size is None:
        args.global_batch_size = args.micro_batch_size * args.data_parallel_size
    if args.num_layers_per_virtual_pipeline_stage is not None:
        per_stage = args.num_layers // args.transformer_pipeline_model_parallel_size
        args.virtual_pipeline_model_parallel_size = per_stage // args.num_layers_per_virtual_pipeline_stage
        if args.virtual_pipeline_model_parallel_size == 1:
            args.virtual_pipeline_model_parallel_size = None
    else:
        args.virtual_pipeline_model_parallel_size = None
    if args.virtual_pipeline_model_parallel_size is None:
        args.overlap_p2p_comm = False
        args.align_param_gather = False
    dtype_names = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    for name in ("main_grads_dtype", "main_params_dtype", "exp_avg_dtype", "exp_avg_sq_dtype"):
        setattr(args, name, dtype_names[getattr(args, name)])
    args.params_dtype = torch.float
    if args.bf16:
        args.params_dtype = torch.bfloat16
        if not args.accumulate_allreduce_grads_in_fp32 and args.main_grads_dtype == torch.float32:
            args.accumulate_allreduce_grads_in_fp32 = True
    if args.dataloader_type is None:
        args.dataloader_type = "single"
    args.consumed_train_samples = 0
    args.skipped_train_samples = 0
    args.consumed_valid_samples = 0
    args.variable_seq_lengths = False
    args.encoder_num_layers = args.num_layers
    if args.ffn_hidden_size is None:
        args.ffn_hidden_size = 4 * args.hidden_size
    if args.kv_channels is None:
        args.kv_channels = args.hidden_size // args.num_attention_heads
    args.encoder_seq_length = args.seq_length
    if args.weight_decay_incr_style == "constant":
        args.start_weight_decay = args.weight_decay
        args.end_weight_decay = args.weight_decay
    if args.tensor_model_parallel_size == 1:
        args.sequence_parallel = False
    if not args.add_bias_linear:
        args.bias_gelu_fusion = False
    if args.add_bias_linear:
        args.add_qkv_bias = True
    if args.use_rotary_position_embeddings:
        args.position_embedding_type = "rope"
    if args.position_embedding_type != "rope":
        args.apply_rope_fusion = False
    if args.num_experts is not None and args.moe_ffn_hidden_size is None:
        args.moe_ffn_hidden_size = args.ffn_hidden_size
    if isinstance(args.moe_router_load_balancing_type, list) and len(args.moe_router_load_balancing_type) == 1:
        args.moe_router_load_balancing_type = args.moe_router_load_balancing_type[0]
    if args.apply_query_key_layer_scaling:
        args.attention_softmax_in_fp32 = True
    if getattr(args, "padded_vocab_size", None) is None:  # not carried over from a checkpoint
        # megatron/training/tokenizer: NullTokenizer's vocabulary is vocab_size + 1 (EOD)
        args.padded_vocab_size = padded_vocab_size(
            true_vocab_size(args), args.make_vocab_size_divisible_by, args.tensor_model_parallel_size
        )


def true_vocab_size(args: argparse.Namespace) -> int:
    """Rows of the embedding that are tokens: ``--vocab-size``, plus NullTokenizer's EOD id."""
    return args.vocab_size + 1 if args.tokenizer_type == "NullTokenizer" else args.vocab_size


def megatron_args(case: Case, ckpt_format: Format, layout: Layout | None = None) -> argparse.Namespace:
    """The ``args`` Megatron-LM (the installed release) would hold and save training ``case`` at ``layout``.

    Example:
        >>> from mcore_cases import CASES_BY_NAME
        >>> a = megatron_args(CASES_BY_NAME["llama_tp2"], "legacy")
        >>> (a.padded_vocab_size, a.num_query_groups, a.ckpt_format, a.layernorm_epsilon)
        (256, 2, 'torch', 1e-06)
    """
    layout = layout or case.layout
    release = installed()
    defaults = _release_defaults(release)
    flags = _as_release(_command_line(case, layout, ckpt_format), release)
    # (0.16.1's derived defaults are a subset: only a recorded parse_args knows every argument)
    unknown = sorted(set(flags) - set(defaults)) if release.args_defaults is not None else []
    if unknown:
        raise ValueError(f"{case.name}: Megatron-LM {release.version} has no argument {', '.join(unknown)}")
    args = argparse.Namespace(**(defaults | flags))
    _validate(args, layout.world)
    return args


def transformer_config(args: argparse.Namespace) -> TransformerConfig:
    """Megatron-LM's ``core_transformer_config_from_args`` for the arguments these cases use."""
    release = installed()
    kw = {f.name: getattr(args, f.name) for f in dataclasses.fields(TransformerConfig) if hasattr(args, f.name)}
    kw |= {
        "persist_layer_norm": not args.no_persist_layer_norm,
        "deallocate_pipeline_outputs": True,
        "pipeline_dtype": args.params_dtype,
        "batch_p2p_comm": not args.overlap_p2p_comm,
        "num_moe_experts": args.num_experts,
        "rotary_interleaved": args.rotary_interleaved,
        "num_layers_in_first_pipeline_stage": args.decoder_first_pipeline_num_layers,
        "num_layers_in_last_pipeline_stage": args.decoder_last_pipeline_num_layers,
        "fp8_param": args.fp8_param_gather,
        "num_query_groups": args.num_query_groups if args.group_query_attention else None,
        "config_logger_dir": args.config_logger_dir,
    }
    kw |= {name: getattr(args, arg) for name, arg in release.config_from_args.items()}
    if args.swiglu:
        kw |= {"activation_func": F.silu, "gated_linear_unit": True, "bias_activation_fusion": args.bias_swiglu_fusion}
    else:
        kw["bias_activation_fusion"] = args.bias_gelu_fusion
    if getattr(args, "rope_type", None) is None:  # 0.16's --rope-type
        kw.pop("rope_type", None)
    if len(args.cp_comm_type) == 1:
        kw["cp_comm_type"] = args.cp_comm_type[0]
    return TransformerConfig(**kw)


# Megatron-LM's load_args_from_checkpoint (core_v0.16.1, ``--use-checkpoint-args
# --use-mp-args-from-checkpoint-args``), in its order: (argument, force). A forced argument takes
# the recorded value whenever one is recorded; the others only where the command line left None.
_CHECKPOINT_ARGS: Final[tuple[tuple[str, bool], ...]] = (
    ("num_layers", False), ("hidden_size", False), ("ffn_hidden_size", False), ("seq_length", False),
    ("num_attention_heads", False), ("num_query_groups", True), ("group_query_attention", True),
    ("kv_channels", False), ("max_position_embeddings", False), ("position_embedding_type", True),
    ("add_position_embedding", True), ("use_rotary_position_embeddings", True), ("rotary_base", True),
    ("rotary_percent", True), ("rotary_interleaved", True), ("add_bias_linear", True), ("add_qkv_bias", True),
    ("squared_relu", True), ("swiglu", True), ("untie_embeddings_and_output_weights", True),
    ("apply_layernorm_1p", True), ("normalization", True), ("apply_query_key_layer_scaling", True),
    ("attention_dropout", True), ("hidden_dropout", True), ("hybrid_override_pattern", True), ("spec", True),
    ("hybrid_attention_ratio", True), ("hybrid_mlp_ratio", True), ("num_experts", True), ("moe_layer_freq", True),
    ("moe_ffn_hidden_size", True), ("moe_router_topk", True), ("moe_token_dispatcher_type", False),
    ("moe_router_pre_softmax", True), ("moe_grouped_gemm", True), ("moe_shared_expert_intermediate_size", True),
    ("moe_router_score_function", True), ("moe_router_enable_expert_bias", True),
    ("moe_router_topk_scaling_factor", True), ("mamba_state_dim", True), ("mamba_head_dim", True),
    ("mamba_num_groups", True), ("mamba_num_heads", True), ("is_hybrid_model", True),
    ("heterogeneous_layers_config_path", True), ("heterogeneous_layers_config_encoded_json", True),
    ("moe_latent_size", True), ("tokenizer_model", True), ("tokenizer_type", True), ("tiktoken_pattern", True),
    ("padded_vocab_size", False), ("ckpt_format", False), ("tensor_model_parallel_size", True),
    ("pipeline_model_parallel_size", True), ("virtual_pipeline_model_parallel_size", True),
    ("num_layers_per_virtual_pipeline_stage", False), ("expert_model_parallel_size", True),
)  # fmt: skip

# What load_args_from_checkpoint leaves to the command line although it changes the function the
# model computes (precision, norm epsilon, qk norms, GELU flavour, gate, RoPE scaling, vocabulary):
# a user repeats them on the command line, here they are read from the same recorded args.
_REPEATED_ON_COMMAND_LINE: Final[tuple[str, ...]] = (
    "bf16", "fp16", "layernorm_epsilon", "layernorm_zero_centered_gamma", "qk_layernorm", "openai_gelu",
    "bias_gelu_fusion", "moe_shared_expert_gate", "use_rope_scaling", "rope_scaling_factor",
    "rotary_seq_len_interpolation_factor", "make_vocab_size_divisible_by", "vocab_size",
    "moe_router_load_balancing_type", "moe_router_dtype", "moe_router_num_groups", "moe_router_group_topk",
    "window_size", "qk_l2_norm", "softmax_scale",
)  # fmt: skip

# One argument, several recorded names: 0.16.1's name first, then what other releases (or
# converters writing plain dicts) record. The value lands under the installed release's name.
_SPELLINGS: Final[dict[str, tuple[str, ...]]] = {
    "layernorm_epsilon": ("layernorm_epsilon", "norm_epsilon"),
    "layernorm_zero_centered_gamma": ("layernorm_zero_centered_gamma", "apply_layernorm_1p"),
    "apply_layernorm_1p": ("apply_layernorm_1p", "layernorm_zero_centered_gamma"),
}


def _recorded(saved: Mapping[str, Any], name: str) -> Any:
    """The first non-None value recorded under one of ``name``'s spellings (None: not recorded)."""
    for spelling in _SPELLINGS.get(name, (name,)):
        if saved.get(spelling) is not None:
            return saved[spelling]
    return None


def args_from_checkpoint(saved: Mapping[str, Any], layout: Layout) -> argparse.Namespace:
    """The ``args`` of a run that loads a checkpoint with ``--use-checkpoint-args`` at ``layout``.

    ``saved`` is the recorded args as a mapping (``vars(args)``, a plain-dict ``args``, or
    ``arguments.json``). Megatron-LM's own ``load_args_from_checkpoint`` reads them with
    ``getattr``, which finds nothing in a plain dict; here both are read. The CPU command line
    (:data:`_CPU_FLAGS`) and the layout's sizes are this run's; the model is the checkpoint's.

    Example:
        >>> a = args_from_checkpoint({"num_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
        ...     "norm_epsilon": 1e-6, "padded_vocab_size": 256, "vocab_size": 200,
        ...     "max_position_embeddings": 32}, Layout(tp=2))
        >>> (a.padded_vocab_size, a.tensor_model_parallel_size, a.seq_length, true_vocab_size(a))
        (256, 2, 32, 200)
    """
    release = installed()
    values = _release_defaults(release) | _as_release(_CPU_FLAGS, release)
    values |= {"micro_batch_size": 1, "no_load_optim": True, "no_load_rng": True, "use_checkpoint_args": True}
    recorded = dict(saved)
    if recorded.get("disable_bias_linear") is not None:  # load_args_from_checkpoint's one-off conversion
        recorded["add_bias_linear"] = not recorded["disable_bias_linear"]
    for name in _REPEATED_ON_COMMAND_LINE:
        dest = release.lm_arg(name)
        if dest in values and _recorded(recorded, name) is not None:
            values[dest] = _recorded(recorded, name)
    for name, force in _CHECKPOINT_ARGS:
        dest = release.lm_arg(name)
        if (force or values.get(dest) is None) and _recorded(recorded, name) is not None:
            values[dest] = _recorded(recorded, name)
    if recorded.get("num_experts") is None:
        values["moe_ffn_hidden_size"] = None
    values |= {
        "tensor_model_parallel_size": layout.tp,
        "pipeline_model_parallel_size": layout.pp,
        "expert_model_parallel_size": layout.ep,
        "virtual_pipeline_model_parallel_size": layout.vpp,
        "num_layers_per_virtual_pipeline_stage": (
            values["num_layers"] // (layout.pp * layout.vpp) if layout.vpp is not None else None
        ),
    }
    if values.get("seq_length") is None:  # --seq-length is required; the eval sequences set their own
        values["seq_length"] = values["max_position_embeddings"]
    for list_arg in release.list_args:
        if not isinstance(values.get(list_arg), list):
            values[list_arg] = [values[list_arg]]
    args = argparse.Namespace(**values)
    _validate(args, layout.world)
    return args
