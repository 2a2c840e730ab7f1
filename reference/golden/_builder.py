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
from pathlib import Path
from typing import Any

import torch

from .._fs import atomic_dir
from ..converter._model import Arch
from ..converter._rows import Rows
from ..converter._synthetic import DictSource, gaussian, random_weights
from ..hf._checkpoint import HFSource, write_hf
from ..hf._safetensors import header_for, write_rows
from ..megatron._rank_writer import write_megatron
from ..parity._forward import reference_logits
from ..release._manifest import write_manifest
from ..release._release import PARTS
from ..repro._environment import ENVIRONMENT_FILES
from ..repro._launch import DEFAULT_LAUNCH_SCRIPT
from ..tokenizer._build import SPECIAL_TOKENS, build_tokenizer
from ._assets import DOCKERFILE, card_text, config_matrix, environment_record, launch_script_text
from ._specs import GOLDEN, PROMPTS, RELEASE_DATE, GoldenSpec

__all__ = ["build_release", "build_all", "main"]


def _count_params(arch: Arch, weights: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() for t in weights.values())


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


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
    sequences = [tok.encode(p).ids for p in PROMPTS]
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

    return reference_processor(AutoTokenizer.from_pretrained(tok_dir, trust_remote_code=False), seed=seed)


def _record_snapshots(model_dir: Path, root: Path, version: str) -> None:
    """The preprocessing snapshots, recorded with the processor as a user loads it from ``model/``."""
    from transformers import AutoProcessor

    from ..preprocessing._cases import CASES, record, snapshot_file
    from ..preprocessing._snapshot import serialize
    from ..processor import PROCESSOR_CONFIG

    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=False)
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
        (model_dir / "README.md").write_text(card_text(spec, arch, version, params))
        write_megatron(HFSource(model_dir), part["checkpoint"], spec.layout, iteration=1000, fsync=False)
        _fill_training_state(part["checkpoint"], arch, spec.seed)
        golden = part["golden"]
        golden.mkdir()
        _eval_set(tok, arch, weights, golden)
        _record_snapshots(model_dir, tmp, version)
        part["configs"].mkdir()
        config = f"{PARTS['configs'].path}/vla-driver-tiny-{spec.dirname}.json"
        for fname, cfg in config_matrix(arch, spec.layout, Path(config).name).items():
            (part["configs"] / fname).write_text(_dump({k: v for k, v in cfg.items() if v is not None}))
        part["docker"].mkdir()
        (part["docker"] / "Dockerfile").write_text(DOCKERFILE)
        (part["docker"] / ENVIRONMENT_FILES[0]).write_text(_dump(environment_record()))
        script = tmp / DEFAULT_LAUNCH_SCRIPT
        script.parent.mkdir()
        script.write_text(launch_script_text(arch, spec.layout, config))
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
