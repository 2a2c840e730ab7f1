"""Build the golden releases: tiny but complete, deterministic.

    python -m vla_reference.golden golden/

writes ``golden/dense`` (Llama-style, TP=2 PP=2), ``golden/moe`` (MoE every 2nd layer,
TP=2 PP=2 EP=2) and ``golden/dense-ft``: a downstream team's fine-tune of the dense release (a
Hugging Face directory with changed weights, no training checkpoint, version 1.1.0), packed with
``--baseline golden/dense``. The suite passes on all three (the fine-tune against its base);
tests copy and break them. The builder makes what a
lab holds after training (checkpoint, tokenizer package, processor, card, configs, environment,
launch script) and hands it to ``pack``, as a lab would: pack's first user.

Every file is a pure function of the builder's inputs, rebuilt byte for byte on any CPU, except
:data:`COMPUTED_FILES`: the expected logits and the preprocessing snapshots hold computed floats.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..converter._model import Arch
from ..converter._synthetic import DictSource, gaussian, random_weights
from ..hf._checkpoint import HFSource, write_hf
from ..megatron._rank_writer import write_megatron
from ..release._pack import pack
from ..release._release import PARTS
from ..repro._environment import ENVIRONMENT_FILES
from ..repro._launch import DEFAULT_LAUNCH_SCRIPT
from ..tokenizer._build import build_tokenizer
from ._assets import DOCKERFILE, card_text, config_matrix, environment_record, launch_script_text
from ._specs import FINE_TUNES, GOLDEN, RELEASE_DATE, FineTuneSpec, GoldenSpec

__all__ = ["build_release", "build_fine_tune", "build_all", "main", "EXAMPLES"]

EXAMPLES = Path(__file__).parent / "examples"  # the demos every golden release ships (docs/examples.md)


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


def _processor(tok_dir: Path, seed: int) -> Any:
    """The reference VLAProcessor around the tokenizer just built (imported here: transformers is slow)."""
    from transformers import AutoTokenizer

    from ..processor import reference_processor

    return reference_processor(AutoTokenizer.from_pretrained(tok_dir, trust_remote_code=False), seed=seed)


def _inputs(spec: GoldenSpec, version: str, work: Path) -> dict[str, Path]:
    """What a lab holds after training, for the tiny model: a Megatron checkpoint (with padding
    noise and Adam state), the tokenizer package, the processor's files, the card, the config
    matrix, the environment and the launch script. ``pack`` makes the release of them."""
    tok_dir = work / "tokenizer"
    tok = build_tokenizer(tok_dir)
    processor = _processor(tok_dir, spec.seed)
    proc_dir = work / "processor"
    proc_dir.mkdir()
    for name, data in sorted(processor.processor_files().items()):  # configs and codebooks
        (proc_dir / name).write_bytes(data)
    vocab = tok.get_vocab_size()
    arch = dataclasses.replace(spec.arch, vocab_size=vocab, padded_vocab_size=vocab)
    weights = random_weights(arch, seed=spec.seed, dtype=arch.params_dtype)
    write_hf(DictSource(arch, weights), work / "weights", fsync=False)
    write_megatron(HFSource(work / "weights"), work / "checkpoint", spec.layout, iteration=1000, fsync=False)
    _fill_training_state(work / "checkpoint", arch, spec.seed)
    (work / "README.md").write_text(card_text(spec, arch, version, _count_params(arch, weights)))
    configs = work / "configs"
    configs.mkdir()
    config = f"{PARTS['configs'].path}/vla-driver-tiny-{spec.dirname}.json"
    for fname, cfg in config_matrix(arch, spec.layout, Path(config).name).items():
        (configs / fname).write_text(_dump({k: v for k, v in cfg.items() if v is not None}))
    docker = work / "docker"
    docker.mkdir()
    (docker / "Dockerfile").write_text(DOCKERFILE)
    (docker / ENVIRONMENT_FILES[0]).write_text(_dump(environment_record()))
    script = work / DEFAULT_LAUNCH_SCRIPT
    script.parent.mkdir()
    script.write_text(launch_script_text(arch, spec.layout, config))
    script.chmod(0o755)
    return {
        "examples": EXAMPLES,
        "checkpoint": work / "checkpoint",
        "tokenizer": tok_dir,
        "processor": proc_dir,
        "card": work / "README.md",
        "configs": configs,
        "docker": docker,
        "scripts": script.parent,
    }


def build_release(spec: GoldenSpec, dst: Path, *, version: str = "1.0.0") -> None:
    """Build one golden release at ``dst`` (atomically): its inputs, then ``pack``."""
    with tempfile.TemporaryDirectory(prefix="vla-golden-") as work:
        inputs = _inputs(spec, version, Path(work))
        pack(
            dst,
            checkpoint=inputs["checkpoint"],
            tokenizer=inputs["tokenizer"],
            processor=inputs["processor"],
            card=inputs["card"],
            configs=inputs["configs"],
            docker=inputs["docker"],
            scripts=inputs["scripts"],
            examples=inputs["examples"],
            name=spec.name,
            version=version,
            date=RELEASE_DATE,
            overwrite=True,
            fsync=False,
        )


def build_fine_tune(ft: FineTuneSpec, dst: Path, base: Path) -> None:
    """Build the golden fine-tune ``ft`` at ``dst`` from its built base release ``base``: what a
    downstream team holds (a Hugging Face directory of the fine-tuned weights, the base's
    tokenizer and processor, a card), packed against the base as ``--baseline``."""
    spec = next(s for s in GOLDEN if s.dirname == ft.base)
    base_version = json.loads((base / "release.json").read_text())["version"]
    src = HFSource(base / PARTS["model"].path)
    weights = {
        key: src.get(key).tensor() + gaussian(src.get(key, meta=True).shape, ft.seed * 1000 + i, std=ft.std)
        for i, key in enumerate(sorted(src.keys()))
    }
    with tempfile.TemporaryDirectory(prefix="vla-golden-ft-") as work:
        hf = Path(work) / "fine-tuned"
        write_hf(DictSource(src.arch, weights), hf, fsync=False)
        shutil.copyfile(base / PARTS["model"].path / "generation_config.json", hf / "generation_config.json")
        card = Path(work) / "README.md"
        card.write_text(
            card_text(
                spec,
                src.arch,
                ft.version,
                _count_params(src.arch, weights),
                date=ft.date,
                fine_tune_of=f"{spec.name} v{base_version}",
            )
        )
        model = base / PARTS["model"].path
        pack(
            dst,
            hf=hf,
            tokenizer=model,
            processor=model,
            card=card,
            configs=base / PARTS["configs"].path,
            docker=base / PARTS["docker"].path,
            scripts=base / PARTS["scripts"].path,
            examples=base / PARTS["examples"].path,
            name=spec.name,
            version=ft.version,
            date=ft.date,
            baseline=base,
            overwrite=True,
            fsync=False,
        )


def build_all(out: Path, only: Sequence[str] = ()) -> list[Path]:
    """Build the golden releases into ``out`` (``only``: these dirnames); a fine-tune is built
    after its base, which must be in ``out`` (built now or before)."""
    built = []
    for spec in GOLDEN:
        if only and spec.dirname not in only:
            continue
        build_release(spec, out / spec.dirname)
        built.append(out / spec.dirname)
    for ft in FINE_TUNES:
        if only and ft.dirname not in only:
            continue
        if not (out / ft.base / "release.json").is_file():
            raise SystemExit(f"{out / ft.base}: {ft.dirname} is built from it; build it first (--only {ft.base})")
        build_fine_tune(ft, out / ft.dirname, out / ft.base)
        built.append(out / ft.dirname)
    return built


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vla_reference.golden", description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="directory to write the golden releases into (e.g. golden/)")
    p.add_argument("--only", nargs="*", default=[], help="build only these (dense, moe, dense-ft)")
    args = p.parse_args(argv)
    for path in build_all(args.out, args.only):
        print(path, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
