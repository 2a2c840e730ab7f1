"""Build the golden releases: tiny but complete, deterministic.

    python -m vla_reference.golden golden/

writes ``golden/dense`` (Llama-style, TP=2 PP=2) and ``golden/moe`` (MoE every 2nd layer,
TP=2 PP=2 EP=2). The suite passes on both; tests copy and break them.

Every file is a pure function of the builder's inputs, rebuilt byte for byte on any CPU, except
:data:`COMPUTED_FILES`: the expected logits and the preprocessing snapshots hold computed floats.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import torch

from .._fs import atomic_dir
from ..converter._model import Arch, Layout
from ..converter._rows import Rows
from ..converter._synthetic import DictSource, gaussian, random_weights
from ..hf._checkpoint import HFSource, write_hf
from ..hf._safetensors import header_for, write_rows
from ..megatron._rank_writer import write_megatron
from ..parity._forward import reference_logits
from ..preprocessing._cases import SNAPSHOT_DIR
from ..release._manifest import write_manifest
from ..release._release import PARTS
from ..repro._environment import ENVIRONMENT_FILES
from ..repro._launch import DEFAULT_LAUNCH_SCRIPT, expected_flags
from ..repro._matrix import MATRIX
from ..tokenizer._build import SPECIAL_TOKENS, build_tokenizer

__all__ = ["GoldenSpec", "GOLDEN", "COMPUTED_FILES", "computed", "build_release", "build_all", "main"]

RELEASE_DATE: Final = "2026-11-01"

# Files that hold floats computed by a forward pass or by signal processing, by path prefix. A
# float32 reduction's last bits depend on the CPU that ran it (SIMD width, BLAS kernel, libm,
# thread count), so a rebuild reproduces these within a tolerance (the value here), not byte for
# byte; the committed copy stays what one run of the builder wrote. Every other file is rebuilt
# byte for byte on any CPU.
COMPUTED_FILES: Final[dict[str, str]] = {
    "golden/expected_logits.safetensors": "the float32 parity tolerance, with the same top-1 token",
    f"{SNAPSHOT_DIR}/": "one 8-bit level of each float output's range; integers (codes, token ids) exactly",
}


def computed(rel: str) -> bool:
    """Whether the release file ``rel`` holds computed floats (see :data:`COMPUTED_FILES`).

    >>> computed("golden/expected_logits.safetensors"), computed("model/model.safetensors")
    (True, False)
    """
    return any(rel == p or (p.endswith("/") and rel.startswith(p)) for p in COMPUTED_FILES)


@dataclass(frozen=True)
class GoldenSpec:
    dirname: str
    name: str
    arch: Arch
    layout: Layout
    seed: int
    model_type: str


def _llama(**kw: Any) -> Arch:
    base: dict[str, Any] = dict(
        num_layers=4,
        hidden_size=64,
        ffn_hidden_size=128,
        num_attention_heads=4,
        num_query_groups=2,
        kv_channels=16,
        padded_vocab_size=1,
        vocab_size=None,
        normalization="RMSNorm",
        norm_epsilon=1e-5,
        swiglu=True,
        position_embedding_type="rope",
        max_position_embeddings=256,
        rotary_base=10000.0,
        tied=False,
        add_bias_linear=False,
        activation="silu",
        params_dtype=torch.float32,
    )
    base.update(kw)
    return Arch(**base)


GOLDEN: Final[tuple[GoldenSpec, ...]] = (
    GoldenSpec("dense", "VLA-Driver-Tiny-Dense", _llama(), Layout(tp=2, pp=2), 1, "Llama-style dense decoder"),
    GoldenSpec(
        "moe",
        "VLA-Driver-Tiny-MoE",
        _llama(
            num_experts=4,
            moe_router_topk=2,
            moe_ffn_hidden_size=64,
            moe_layers=tuple(i % 2 == 0 for i in range(4)),
            params_dtype=torch.bfloat16,
        ),
        Layout(tp=2, pp=2, ep=2),
        2,
        "Llama-style decoder with a mixture of experts every 2nd layer",
    ),
)

_PROMPTS: Final = (
    "Describe this driving scene:<|image_start|><|image|><|image|><|image_end|> The action is:<|act:stop|>",
    "<|video_start|><|camera:front|><|t_0|><|image|><|t_1|><|image|><|video_end|> Turn left at the next junction.",
    "Say <|ipa_start|><|ipa_s|><|ipa_t|><|ipa_ɹ|><|ipa_i|><|ipa_t|><|ipa_end|> then "
    "<|script_start|><|blender:cube|><|blender:scale|><|blender:end|><|script_end|>",
    "The ego vehicle approaches a busy intersection. The traffic light for the ego lane is red, so the vehicle "
    "slows down and stops behind the white line.<|action_start|><|act:slow_down|><|act:stop|><|action_end|>",
)


def _count_params(arch: Arch, weights: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() for t in weights.values())


def _card(spec: GoldenSpec, arch: Arch, version: str, params: int) -> str:
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
release_date: {RELEASE_DATE}
parameters: {params}
context_length: {arch.max_position_embeddings}
---

# {spec.name} v{version}

## Model Details

- **Name and version:** {spec.name} v{version}
- **Release date:** {RELEASE_DATE}
- **Model type:** {spec.model_type} (multimodal autoregressive transformer, unified generation and understanding)
- **Parameters:** {params} ({params / 1e6:.2f}M)
- **Context length:** {arch.max_position_embeddings} tokens
- **License:** Apache-2.0
- **Contact:** vla-releases@pytest-vla.dev

This is a tiny synthetic release built by pytest-vla's golden-release generator. Its weights are
random: it exists to exercise the release checks, not to drive anything.

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
bundled {len(_PROMPTS)}-line driving and robotics corpus shipped in `vla_reference/data/corpus.txt`.

### Data Governance
The corpus was written for this purpose and contains no personal data.

## Evaluation

### Results

| Benchmark | Metric | Score |
|---|---|---|
| Golden eval set (`golden/`) | sharded-vs-merged max abs logit difference | 0.0 (bit-exact merge) |
| Golden eval set (`golden/`) | top-1 agreement with the training-side logits | 100% |

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


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


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


def _matrix(arch: Arch, layout: Layout, name: str) -> dict[str, dict[str, Any]]:
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


def _launch_script(arch: Arch, layout: Layout, config: str) -> str:
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


_DOCKERFILE: Final = """# The reproduction environment. Base image pinned by tag and digest, packages by version.
FROM nvcr.io/nvidia/pytorch:24.03-py3@sha256:5a1a4e0d7f1c2b3e4d5c6b7a8f9e0d1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a6f7e
RUN pip install --no-cache-dir \\
    transformers==5.23.0 \\
    tokenizers==0.23.3 \\
    safetensors==0.8.0 \\
    sentencepiece==0.2.0
WORKDIR /workspace
"""


def _environment() -> dict[str, str]:
    return {
        "python": "3.10.12",
        "torch": "2.3.0a0+6ddf5cf85e",
        "cuda": "12.4",
        "nccl": "2.20.5",
        "cudnn": "9.0.0",
        "transformer_engine": "1.4.0",
    }


def _fill_training_state(root: Path, arch: Arch, seed: int) -> None:
    """Give the checkpoint what a training run leaves: random padding rows and Adam state."""
    for f in sorted(root.rglob("model_optim_rng.pt")):
        state = torch.load(f, weights_only=True)
        tp_rank = int(f.parent.name.split("_")[2])
        model = state["model"]
        for n, key in enumerate(("embedding.word_embeddings.weight", "output_layer.weight")):
            # same noise on every replica (EP ranks) of a TP rank
            noise_seed = seed * 1000 + tp_rank * 10 + n
            if key in model and arch.vocab_size is not None:
                t = model[key]
                # rank-local rows beyond the true vocabulary are padding: training leaves noise there
                start = tp_rank * t.shape[0]
                pad_from = max(arch.vocab_size - start, 0)
                if pad_from < t.shape[0]:
                    t[pad_from:] = gaussian(t[pad_from:].shape, noise_seed, std=0.02).to(t.dtype)
        params = sorted((k, t) for k, t in model.items() if t is not None)  # not the linears' _extra_state
        groups = [{"lr": 3.0e-5, "weight_decay": 0.1, "params": list(range(len(params)))}]
        if arch.params_dtype == torch.float32:
            # plain Adam: its fp32 moments live in this file, beside the weights
            moments = {
                j: {
                    "exp_avg": torch.zeros_like(t, dtype=torch.float32),
                    "exp_avg_sq": torch.full_like(t, 1e-8, dtype=torch.float32),
                }
                for j, (_, t) in enumerate(params)
            }
            state["optimizer"] = {"state": moments, "param_groups": groups}
        else:
            # distributed optimizer: the moments go to distrib_optim.pt (not shipped here)
            state["optimizer"] = {"param_groups": groups}
        state["iteration"] = 1000
        torch.save(state, f)


def _eval_set(tok: Any, arch: Arch, weights: dict[str, torch.Tensor], dst: Path) -> None:
    sequences = [tok.encode(p).ids for p in _PROMPTS]
    data = {
        "description": "token ids of interleaved multimodal sequences; logits from the training-side "
        "reference forward in float32",
        "sequences": [{"name": f"seq_{i}", "input_ids": ids} for i, ids in enumerate(sequences)],
    }
    (dst / "eval_set.json").write_text(_dump(data))
    entries, rows = [], []
    for i, ids in enumerate(sequences):
        logits = reference_logits(arch, weights.__getitem__, torch.tensor([ids]))[0].contiguous()
        entries.append((f"seq_{i}", tuple(logits.shape), logits.dtype))
        rows.append(Rows.of(logits))
    with (dst / "expected_logits.safetensors").open("wb") as f:
        f.write(header_for(entries, {"format": "pt", "source": "reference forward, float32"}))
        for r in rows:
            write_rows(f, r)


def _processor(tok_dir: Path, seed: int) -> Any:
    """The reference VLAProcessor around the tokenizer just built (imported here: transformers is slow)."""
    from transformers import AutoTokenizer

    from ..processor import reference_processor

    return reference_processor(AutoTokenizer.from_pretrained(tok_dir), seed=seed)


def _record_snapshots(model_dir: Path, root: Path, version: str) -> None:
    """The preprocessing snapshots, recorded with the processor as a user loads it from ``model/``."""
    from transformers import AutoProcessor

    from ..preprocessing._cases import CASES, record, snapshot_file
    from ..preprocessing._snapshot import serialize
    from ..processor import PROCESSOR_CONFIG

    processor = AutoProcessor.from_pretrained(model_dir)
    config = json.loads((model_dir / PROCESSOR_CONFIG).read_text())
    for case in CASES:
        f = snapshot_file(root, case)
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(serialize(record(processor, case, version=version, processor_config=config)))


def build_release(spec: GoldenSpec, dst: Path, *, version: str = "1.0.0") -> None:
    """Build one golden release at ``dst`` (atomically)."""
    with atomic_dir(dst, overwrite=True, fsync=False) as tmp:
        part = {name: tmp / p.path for name, p in PARTS.items()}  # the release's directories
        model_dir = part["model"]
        tok_dir = tmp / "tokenizer-build"
        tok = build_tokenizer(tok_dir)
        processor = _processor(tok_dir, spec.seed)
        vocab = tok.get_vocab_size()
        arch = dataclasses.replace(spec.arch, vocab_size=vocab, padded_vocab_size=vocab)
        weights = random_weights(arch, seed=spec.seed, dtype=arch.params_dtype)
        ids = {
            "bos_token_id": tok.token_to_id(SPECIAL_TOKENS.bos),
            "eos_token_id": tok.token_to_id(SPECIAL_TOKENS.eos),
            "pad_token_id": tok.token_to_id(SPECIAL_TOKENS.pad),
        }
        # the action statistics are mirrored in config.json, derived from the processor's
        norm_stats = processor.vla.actions.to_json()["norm_stats"]
        write_hf(DictSource(arch, weights), model_dir, fsync=False, config_overrides={**ids, "norm_stats": norm_stats})
        for f in sorted(tok_dir.iterdir()):
            shutil.move(str(f), model_dir / f.name)
        tok_dir.rmdir()
        for name, data in sorted(processor.processor_files().items()):  # configs and codebooks
            (model_dir / name).write_bytes(data)
        (model_dir / "generation_config.json").write_text(
            _dump({**ids, "max_length": arch.max_position_embeddings, "do_sample": False})
        )
        params = _count_params(arch, weights)
        (model_dir / "README.md").write_text(_card(spec, arch, version, params))
        write_megatron(HFSource(model_dir), part["checkpoint"], spec.layout, iteration=1000, fsync=False)
        _fill_training_state(part["checkpoint"], arch, spec.seed)
        golden = part["golden"]
        golden.mkdir()
        _eval_set(tok, arch, weights, golden)
        _record_snapshots(model_dir, tmp, version)
        part["configs"].mkdir()
        config = f"{PARTS['configs'].path}/vla-driver-tiny-{spec.dirname}.json"
        for fname, cfg in _matrix(arch, spec.layout, Path(config).name).items():
            (part["configs"] / fname).write_text(_dump({k: v for k, v in cfg.items() if v is not None}))
        part["docker"].mkdir()
        (part["docker"] / "Dockerfile").write_text(_DOCKERFILE)
        (part["docker"] / ENVIRONMENT_FILES[0]).write_text(_dump(_environment()))
        script = tmp / DEFAULT_LAUNCH_SCRIPT
        script.parent.mkdir()
        script.write_text(_launch_script(arch, spec.layout, config))
        script.chmod(0o755)
        write_manifest(
            tmp,
            name=spec.name,
            version=version,
            date=RELEASE_DATE,
            config=config,
            launch_script=DEFAULT_LAUNCH_SCRIPT,
        )


def build_all(out: Path, only: Sequence[str] = ()) -> list[Path]:
    built = []
    for spec in GOLDEN:
        if only and spec.dirname not in only:
            continue
        build_release(spec, out / spec.dirname)
        built.append(out / spec.dirname)
    return built


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vla_reference.golden", description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="directory to write the golden releases into (e.g. golden/)")
    p.add_argument("--only", nargs="*", default=[], help="build only these (dense, moe)")
    args = p.parse_args(argv)
    for path in build_all(args.out, args.only):
        print(path, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
