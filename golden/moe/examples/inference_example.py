"""The SDK walk-through: the shipped VLAProcessor on every modality, generation, and actions.

    python examples/inference_example.py --model_path model/

1. Loads the processor and the model from the release's files (stock transformers classes).
2. Preprocesses one input of each kind the processor takes: text, an image, a video, audio, a 3D
   scene script, IPA, named actions and continuous action vectors, and a mixed sequence; prints
   how many tokens each became.
3. Generates an answer to the mixed sequence (greedy).
4. Decodes actions: the model is asked for an action block (its next tokens constrained to action
   bins, as a VLA policy decodes), and the bins are turned back into continuous actions in dataset
   units with the processor's own ``decode_actions`` and norm_stats.

The inputs are made here (drawn images, a tone); the tiny golden models' outputs are nonsense,
but deterministic.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from transformers import AutoModelForCausalLM, AutoProcessor, LogitsProcessor, LogitsProcessorList

from vla_reference.processor import IPA, Action, ActionVector, Audio, Script3D, Video


def model_dir(path: Path) -> Path:
    return path / "model" if (path / "model" / "config.json").is_file() else path


def scene(width: int = 48, height: int = 32, shift: int = 0) -> Image.Image:
    """A road: grey asphalt, a white lane line, a red light."""
    im = Image.new("RGB", (width, height), (90, 90, 90))
    draw = ImageDraw.Draw(im)
    draw.line([(width // 2 + shift, height), (width // 2 + shift, height // 2)], fill=(255, 255, 255), width=2)
    draw.ellipse([(2, 2), (8, 8)], fill=(220, 20, 20))
    return im


def inputs(norm_key: str) -> dict[str, list[Any]]:
    tone = (0.5 * np.sin(2 * np.pi * 440.0 * np.arange(4000) / 16000)).astype(np.float32)
    return {
        "text": ["The ego vehicle approaches an intersection."],
        "image": [scene()],
        "video": [Video([scene(shift=s) for s in range(0, 8, 2)], fps=2.0, camera="front")],
        "audio": [Audio(tone, sampling_rate=16000)],
        "script3d": [Script3D("translate 0 0 1.5\ncube 2")],
        "ipa": [IPA("stɹˈiːt")],
        "actions_named": [Action.SLOW_DOWN, Action.STOP],
        "action_vectors": [ActionVector([[0.05, -0.8, 1.0]], key=norm_key)],
        "mixed": ["Describe this driving scene:", scene(), "The action is:"],
    }


class OnlyTokens(LogitsProcessor):
    """Constrained decoding: every next token one of ``allowed``."""

    def __init__(self, allowed: Sequence[int]) -> None:
        self.allowed = torch.tensor(list(allowed))

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        masked = torch.full_like(scores, float("-inf"))
        masked[:, self.allowed] = scores[:, self.allowed]
        return masked


def generate(model: Any, ids: torch.Tensor, n: int, allowed: Sequence[int] | None = None) -> torch.Tensor:
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            logits_processor=LogitsProcessorList([OnlyTokens(allowed)]) if allowed is not None else None,
        )
    return out[0, ids.shape[1] :]


def walk_through(model_path: Path) -> dict[str, Any]:
    folder = model_dir(model_path)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=False)
    model: Any = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=False, dtype=torch.float32)
    norm_key = sorted(processor.vla.actions.norm_stats)[0]
    tokens = {
        kind: int(processor(items, return_tensors="pt")["input_ids"].shape[1])
        for kind, items in inputs(norm_key).items()
    }
    mixed = processor(inputs(norm_key)["mixed"], return_tensors="pt")["input_ids"]
    answer = processor.tokenizer.decode(generate(model, mixed, 8))
    # actions: the model's action block, decoded back to continuous actions
    roles = processor.token_map.roles
    offset, count = processor.token_map.ranges["action_bin"]
    dims = processor.vla.actions.norm_stats[norm_key].dim
    prompt = torch.cat([mixed, torch.tensor([[roles["action_start"]]])], dim=1)
    bins = generate(model, prompt, 2 * dims, allowed=range(offset, offset + count)).tolist()
    actions = processor.decode_actions([roles["action_start"], *bins, roles["action_end"]], unnorm_key=norm_key)
    return {
        "tokens": tokens,
        "answer": answer,
        "action_tokens": [processor.describe_token(t) for t in bins],
        "actions": np.round(actions, 4).tolist(),
        "norm_stats": norm_key,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_path", type=Path, required=True, help="the release's model/ directory (or the release)")
    args = p.parse_args(argv)
    result = walk_through(args.model_path)
    for kind, n in result["tokens"].items():
        print(f"{kind:>15}: {n} tokens")
    print(f"answer: {result['answer']}")
    print(f"actions ({result['norm_stats']}): {result['actions']}")
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
