"""The golden releases' text assets: the model card, the config matrix, the launch script, the
Dockerfile and the environment record, derived from the model and its layout."""

from __future__ import annotations

from typing import Any, Final

import torch

from ..converter._model import Arch, Layout
from ..repro._launch import expected_flags
from ..repro._matrix import MATRIX
from ._specs import PROMPTS, RELEASE_DATE, GoldenSpec


def card_text(
    spec: GoldenSpec,
    arch: Arch,
    version: str,
    params: int,
    *,
    date: str = RELEASE_DATE,
    fine_tune_of: str | None = None,
) -> str:
    """The card; ``fine_tune_of`` ("NAME vX.Y.Z") makes it a fine-tune's card: no training
    checkpoint ships, so it claims no sharded-vs-merged result."""
    if fine_tune_of is None:
        origin = "Its weights are\nrandom: it exists to exercise the release checks, not to drive anything."
        lineage = ""
        results = (
            "| Golden eval set (`golden/`) | sharded-vs-merged max abs logit difference | 0.0 (bit-exact merge) |\n"
            "| Golden eval set (`golden/`) | top-1 agreement with the training-side logits | 100% |"
        )
    else:
        origin = (
            f"It is a fine-tune of\n{fine_tune_of}: that release's random weights plus seeded noise, with the same "
            "tokenizer\nand preprocessing. It exists to exercise the checks a fine-tune meets against its base."
        )
        lineage = f"- **Fine-tuned from:** {fine_tune_of} (weights only)\n"
        results = "| Golden eval set (`golden/`) | top-1 agreement with the expected logits | 100% |"
    return f"""---
license: apache-2.0
language:
- en
library_name: transformers
pipeline_tag: text-generation
tags:
- vision-language-action
- autonomous-driving
model_name: {spec.name}
version: {version}
release_date: {date}
parameters: {params}
context_length: {arch.max_position_embeddings}
---

# {spec.name} v{version}

## Model Details

- **Name and version:** {spec.name} v{version}
- **Release date:** {date}
- **Model type:** {spec.model_type} (multimodal autoregressive transformer, unified generation and understanding)
- **Parameters:** {params} ({params / 1e6:.2f}M)
- **Context length:** {arch.max_position_embeddings} tokens
- **License:** Apache-2.0
- **Contact:** vla-releases@pytest-vla.dev
{lineage}
This is a tiny synthetic release built by pytest-vla's golden-release generator. {origin}

## Intended Use

### Direct Use
Testing release tooling: conversion between Megatron and Hugging Face layouts, tokenizer and
preprocessing checks, and model-card linting.

### Downstream Use
Fine-tuning experiments on the release pipeline itself (for example, checking that a fine-tune
keeps the base release's tokenizer IDs and preprocessing).

### Out-of-Scope Use
Any control of a real vehicle or robot; any use that relies on the model's outputs, which are
random by construction.

## Training Data

### Sources and Composition
None: the weights are drawn from a seeded normal distribution. The tokenizer was trained on the
bundled {len(PROMPTS)}-line driving and robotics corpus shipped in `vla_reference/data/corpus.txt`.

### Data Governance
The corpus was written for this purpose and contains no personal data.

## Evaluation

### Results

| Benchmark | Metric | Score |
|---|---|---|
{results}

### Limitations
- **Factuality:** the model has random weights; every output is meaningless.
- **Robustness:** not evaluated on any real driving data, including rare scenes and bad weather.
- **Bias:** the tokenizer corpus is English-only and shaped by North American and European traffic rules.
- **Causal reasoning:** none; a model of this size cannot represent long-horizon interactions.

## Ethical Considerations

### Risks
Mistaking this release for a real driving policy. Its outputs are random and unsafe.

### Mitigations
The name, this card and the random weights make that explicit; the release tooling refuses
nothing on its behalf, so downstream users must read the card.

## Citation

```bibtex
@misc{{vla_golden_{spec.dirname},
  title  = {{{spec.name}: a golden release for pytest-vla}},
  author = {{{{pytest-vla contributors}}}},
  year   = {{2026}},
  note   = {{Version {version}}}
}}
```
"""


# The golden run's training settings (the architecture and layout flags come from the matrix code)
_TRAINING: Final = {
    "global-batch-size": 64,
    "lr-decay-style": "cosine",
    "lr": 3.0e-4,
    "min-lr": 3.0e-5,
    "weight-decay": 0.1,
}


def _model_flags(arch: Arch, layout: Layout) -> dict[str, Any]:
    """The config-matrix flags this architecture and layout give (``repro.expected_flags``), by
    their matrix names, with MoE every second layer as the golden MoE model has it."""
    names = {key.name for key in MATRIX}
    flags = {k: v for k, v in expected_flags(arch, layout).items() if k in names}
    if arch.num_experts:
        flags["moe-layer-freq"] = 2
    return flags


def config_matrix(arch: Arch, layout: Layout, name: str) -> dict[str, dict[str, Any]]:
    tiny = {
        **_model_flags(arch, layout),
        **_TRAINING,
        "precision": "bf16" if arch.params_dtype == torch.bfloat16 else "fp32",
    }
    return {
        name: tiny,
        "vla-1b-dense.json": {
            "num-layers": 24,
            "hidden-size": 2048,
            "ffn-hidden-size": 8192,
            "num-attention-heads": 32,
            "num-experts": None,
            "moe-router-topk": None,
            "global-batch-size": 4194304,
            "lr-decay-style": "cosine",
            "lr": 3.0e-4,
            "min-lr": 3.0e-5,
            "weight-decay": 0.1,
            "tensor-model-parallel-size": 4,
            "pipeline-model-parallel-size": 8,
            "precision": "bf16",
            "fp8-format": "e4m3",
        },
        "vla-10b-moe.json": {
            "num-layers": 48,
            "hidden-size": 4096,
            "ffn-hidden-size": 14336,
            "num-attention-heads": 32,
            "num-experts": 16,
            "moe-router-topk": 2,
            "moe-layer-freq": 2,
            "global-batch-size": 8388608,
            "lr-decay-style": "cosine",
            "lr": 1.5e-4,
            "min-lr": 1.5e-5,
            "weight-decay": 0.1,
            "tensor-model-parallel-size": 8,
            "pipeline-model-parallel-size": 16,
            "precision": "bf16",
            "fp8-format": "e4m3",
        },
    }


def launch_script_text(arch: Arch, layout: Layout, config: str) -> str:
    flags = [f"--{k} {v}" for k, v in _model_flags(arch, layout).items()]
    lines = "".join(f"    {' '.join(flags[i : i + 3])} \\\n" for i in range(0, len(flags), 3))
    training = " ".join(f"--{k} {v}" for k, v in _TRAINING.items())
    return f"""#!/usr/bin/env bash
# Launch pre-training with Megatron-LM. Needs only these variables; everything else is pinned
# here and in {config}.
#SBATCH --job-name=vla-pretrain
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --gres=gpu:8
set -euo pipefail
: "${{DATA_PATH:?set DATA_PATH to the blended dataset prefix}}"
: "${{CHECKPOINT_PATH:?set CHECKPOINT_PATH to the checkpoint directory}}"
MASTER_ADDR=${{MASTER_ADDR:-localhost}}
MASTER_PORT=${{MASTER_PORT:-6000}}

torchrun --nproc_per_node 8 --nnodes 1 --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \\
    pretrain_gpt.py \\
{lines}    --group-query-attention --normalization RMSNorm --swiglu \\
    --position-embedding-type rope --untie-embeddings-and-output-weights --disable-bias-linear \\
    --seq-length {arch.max_position_embeddings} --micro-batch-size 1 {training} \\
    --train-iters 1000 \\
    --data-path "$DATA_PATH" --save "$CHECKPOINT_PATH" --load "$CHECKPOINT_PATH" --ckpt-format torch
"""


DOCKERFILE: Final = """# The reproduction environment. Base image pinned by tag and digest, packages by version.
FROM nvcr.io/nvidia/pytorch:24.03-py3@sha256:5a1a4e0d7f1c2b3e4d5c6b7a8f9e0d1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a6f7e
RUN pip install --no-cache-dir \\
    transformers==5.23.0 \\
    tokenizers==0.23.3 \\
    safetensors==0.8.0 \\
    sentencepiece==0.2.0
WORKDIR /workspace
"""


def environment_record() -> dict[str, str]:
    return {
        "python": "3.10.12",
        "torch": "2.3.0a0+6ddf5cf85e",
        "cuda": "12.4",
        "nccl": "2.20.5",
        "cudnn": "9.0.0",
        "transformer_engine": "1.4.0",
    }
