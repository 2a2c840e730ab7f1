"""Build a case's GPTModel chunks the way Megatron-LM does, perturb them, and run its forward.

Runs inside a rank process whose model-parallel state is initialised (``mcore_rank``).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Final

import torch
from megatron.core import parallel_state as ps
from megatron.core.enums import ModelType
from megatron.core.models.gpt import GPTModel
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_decoder_block_spec, get_gpt_layer_local_spec
from megatron.core.pipeline_parallel import get_forward_backward_func
from megatron.core.tensor_parallel import VocabParallelEmbedding
from megatron.core.transformer.module import Float16Module
from megatron.core.transformer.moe.experts import GroupedMLP
from megatron.core.transformer.moe.router import TopKRouter
from megatron.core.transformer.transformer_config import TransformerConfig

# isort: split
from mcore_args import transformer_config
from mcore_release import installed

# Perturbation scales: every weight is redrawn so norms sit away from 1, biases away from 0, every
# expert differs, and routing margins are wide (router logits spread over several units).
_NORM_WEIGHT_STD: Final = 0.1
_BIAS_STD: Final = 0.05
_ROUTER_STD: Final = 0.5
_EMBEDDING_STD: Final = 0.3
_WEIGHT_STD: Final = 0.05


def _layer_spec(args: argparse.Namespace, config: TransformerConfig, vp_stage: int | None) -> object:
    """Megatron-LM's ``gpt_builder`` spec choice for ``--transformer-impl local``."""
    if args.num_experts:
        return get_gpt_decoder_block_spec(
            config,
            use_transformer_engine=False,
            normalization=args.normalization,
            qk_l2_norm=args.qk_l2_norm,
            vp_stage=vp_stage,
        )
    return get_gpt_layer_local_spec(
        num_experts=args.num_experts,
        moe_grouped_gemm=args.moe_grouped_gemm,
        qk_layernorm=args.qk_layernorm,
        multi_latent_attention=args.multi_latent_attention,
        moe_use_legacy_grouped_gemm=args.moe_use_legacy_grouped_gemm,
        normalization=args.normalization,
    )


def build_chunks(args: argparse.Namespace, config: TransformerConfig) -> list[torch.nn.Module]:
    """Megatron-LM's ``get_model``: one GPTModel per virtual stage, in Float16Module for bf16.

    The logits are gathered over TP (``parallel_output=False``); that flag only changes forward's
    output, not the weights or the state dict.
    """
    vpp = args.virtual_pipeline_model_parallel_size
    chunks: list[torch.nn.Module] = []
    for i in range(vpp or 1):
        vp_stage = i if vpp else None
        model = GPTModel(
            config=config,
            transformer_layer_spec=_layer_spec(args, config, vp_stage),
            vocab_size=args.padded_vocab_size,
            max_sequence_length=args.max_position_embeddings,
            pre_process=ps.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vp_stage),
            post_process=ps.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vp_stage),
            fp16_lm_cross_entropy=args.fp16_lm_cross_entropy,
            parallel_output=False,
            share_embeddings_and_output_weights=not args.untie_embeddings_and_output_weights,
            position_embedding_type=args.position_embedding_type,
            rotary_percent=args.rotary_percent,
            rotary_base=args.rotary_base,
            rope_scaling=args.use_rope_scaling,
            vp_stage=vp_stage,
        )
        model.model_type = ModelType.encoder_or_decoder
        chunks.append(Float16Module(config, model) if (args.fp16 or args.bf16) else model)
    for c in chunks:
        c.eval()
    return chunks


def unwrap(chunk: torch.nn.Module) -> GPTModel:
    """The GPTModel inside a chunk (Megatron-LM's ``unwrap_model`` before saving)."""
    return chunk.module if isinstance(chunk, Float16Module) else chunk  # type: ignore[return-value]


def _seed(*parts: object) -> int:
    """A 63-bit seed from the parts' text (stable across processes, unlike ``hash``)."""
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little") >> 1


def _draw(shape: torch.Size, *seed_parts: object) -> torch.Tensor:
    """Standard normal float32 values of ``shape`` from a CPU generator seeded by the parts."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(_seed(*seed_parts)), dtype=torch.float32)


def _value(module: torch.nn.Module, pname: str, p: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The perturbed value of parameter ``pname`` of ``module`` from standard normal ``noise``."""
    if isinstance(module, (torch.nn.LayerNorm, torch.nn.RMSNorm)):
        return 1.0 + _NORM_WEIGHT_STD * noise if pname == "weight" else _BIAS_STD * noise
    if pname.endswith("bias"):
        return _BIAS_STD * noise
    if isinstance(module, TopKRouter):
        return _ROUTER_STD * noise
    if isinstance(module, (torch.nn.Embedding, VocabParallelEmbedding)):
        return _EMBEDDING_STD * noise
    return _WEIGHT_STD * noise


@torch.no_grad()
def perturb(chunks: list[torch.nn.Module], case_name: str) -> None:
    """Redraw every parameter deterministically, consistently with how Megatron shards it.

    Seeds name the parameter, the pipeline rank and the virtual stage; a TP-split parameter
    (``tensor_model_parallel``) adds its (expert-)TP rank, an expert parameter (``allreduce`` False)
    its EP rank and local expert index. Replicated parameters (norms, row-parallel biases, the
    router) thus match on every TP rank and DP replica. The last stage's copy of tied embeddings is
    set from the first stage's, as megatron does at initialisation.
    """
    pp_rank = ps.get_pipeline_model_parallel_rank()
    tp_rank = ps.get_tensor_model_parallel_rank()
    ep_rank = ps.get_expert_model_parallel_rank()
    etp_rank = ps.get_expert_tensor_parallel_rank()
    for vp, chunk in enumerate(chunks):
        model = unwrap(chunk)
        for mod_name, module in model.named_modules():
            for pname, p in module.named_parameters(recurse=False):
                if getattr(p, "shared_embedding", False) and not model.pre_process:
                    continue  # the tied output copy, synced below
                expert = not getattr(p, "allreduce", True)
                parts: list[object] = [case_name, f"pp{pp_rank}", f"vp{vp}", f"{mod_name}.{pname}"]
                if getattr(p, "tensor_model_parallel", False):
                    parts.append(f"tp{etp_rank if expert else tp_rank}")
                if expert:
                    parts.append(f"ep{ep_rank}")
                if isinstance(module, GroupedMLP):
                    # weight1/weight2 hold the local experts back to back: [E, hidden, ffn] in memory
                    rows = p.data.view(module.num_local_experts, -1)
                    for i in range(module.num_local_experts):
                        rows[i] = _WEIGHT_STD * _draw(rows[i].shape, *parts, f"local_expert{i}")
                    continue
                p.data.copy_(_value(module, pname, p, _draw(p.shape, *parts)).to(p.dtype))
        group = _embedding_group(model)
        if model.share_embeddings_and_output_weights and group is not None:
            weight = model.shared_embedding_or_output_weight()
            if not model.pre_process:
                weight.data.zero_()
            torch.distributed.all_reduce(weight.data, group=group)


def _embedding_group(model: GPTModel) -> object | None:
    """The group tying the first stage's embedding to the last stage's output, if this rank is in it."""
    if installed().model_embd_group:
        return model.embd_group if model._is_in_embd_group() else None
    # megatron-core 0.13: one embedding group in parallel_state (a one-stage pipeline has none)
    if ps.get_pipeline_model_parallel_world_size() == 1:
        return None
    in_group = ps.is_rank_in_embedding_group(ignore_virtual=False, vp_stage=model.vp_stage)
    return ps.get_embedding_group() if in_group else None


def fp32_twin(args: argparse.Namespace, chunks: list[torch.nn.Module]) -> list[torch.nn.Module]:
    """Float32 chunks holding the (bf16) weights of ``chunks``, upcast exactly.

    GroupedMLP asserts ``config.bf16`` (the grouped_gemm CUDA kernels are bf16-only); the CPU
    ``gmm`` stand-in has no such limit, so the twin's GroupedMLP modules see ``bf16=True``.
    """
    args32 = copy.copy(args)
    args32.bf16, args32.fp16, args32.params_dtype = False, False, torch.float32
    twin = build_chunks(args32, transformer_config(args32))
    for t, c in zip(twin, chunks, strict=True):
        t.load_state_dict({k: v.float() if torch.is_tensor(v) else v for k, v in unwrap(c).state_dict().items()})
        for m in t.modules():
            if isinstance(m, GroupedMLP):
                m.config = copy.copy(m.config)
                m.config.bf16 = True
    return twin


def _collect(output: torch.Tensor, non_loss_data: bool = False) -> torch.Tensor:
    """Non-loss-data collector: keep the last stage's logits ([1, T, padded vocab], fp32)."""
    return output.detach().float().clone()


def _forward_step(mask: torch.Tensor, data_iterator: Iterator[tuple[torch.Tensor, torch.Tensor]], model: object):
    """Megatron ``forward_step_func``: one micro-batch through one chunk."""
    tokens, position_ids = next(data_iterator)
    return model(tokens, position_ids, mask), _collect  # type: ignore[operator]


def _schedule_logits(chunks: list[torch.nn.Module], sequences: list[tuple[int, ...]]) -> list[torch.Tensor] | None:
    """One forward-only schedule run over sequences of one length (one micro-batch each)."""
    t = len(sequences[0])
    mask = torch.triu(torch.ones(1, 1, t, t, dtype=torch.bool), diagonal=1)
    batches = [(torch.tensor([s], dtype=torch.long), torch.arange(t, dtype=torch.long)[None]) for s in sequences]
    iterators = [iter(batches) for _ in chunks]
    store = get_forward_backward_func()(
        forward_step_func=partial(_forward_step, mask),
        data_iterator=iterators if len(chunks) > 1 else iterators[0],
        model=chunks,
        num_microbatches=len(batches),
        seq_length=t,
        micro_batch_size=1,
        forward_only=True,
        collect_non_loss_data=True,
    )
    if not ps.is_pipeline_last_stage(ignore_virtual=True):
        return None
    return [x[0] for x in store]


@torch.no_grad()
def forward_logits(chunks: list[torch.nn.Module], sequences: Sequence[Sequence[int]]) -> list[torch.Tensor] | None:
    """Logits of each sequence from megatron's pipeline schedule (one micro-batch per sequence).

    The schedules send fixed ``[seq, micro_batch, hidden]`` tensors between stages, so sequences
    of one length share a schedule run and each other length runs its own (in first-seen order).
    Returns ``[T, padded vocab]`` float32 tensors on the last pipeline stage, None elsewhere. The
    causal mask is explicit (True = masked): megatron's default mask is built on a CUDA device.
    """
    by_length: dict[int, list[int]] = {}
    for i, s in enumerate(sequences):
        by_length.setdefault(len(s), []).append(i)
    out: dict[int, torch.Tensor] = {}
    for idx in by_length.values():
        logits = _schedule_logits(chunks, [tuple(sequences[i]) for i in idx])
        if logits is not None:
            out.update(zip(idx, logits, strict=True))
    if not ps.is_pipeline_last_stage(ignore_virtual=True):
        return None
    return [out[i] for i in range(len(sequences))]
