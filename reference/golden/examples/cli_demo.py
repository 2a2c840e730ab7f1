"""Ask the release's model about a driving scene from the command line (the chapter's 24.3 demo).

    python examples/cli_demo.py --model_path model/ --image_input scene.png \
        --text_prompt "What should the car do?"

The processor and the model are loaded from the release's own files, in stock transformers
classes (no remote code, nothing from the hub); the prompt and the image go through the shipped
VLAProcessor, generation is greedy, and the answer is printed as ``answer: ...``. The tiny golden
models answer nonsense, but always the same nonsense.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import AutoModelForCausalLM, AutoProcessor

import vla_reference.processor  # noqa: F401 - registers VLAProcessor with AutoProcessor


def model_dir(path: Path) -> Path:
    """The model directory: ``path`` itself, or the ``model/`` of a release root."""
    return path / "model" if (path / "model" / "config.json").is_file() else path


def answer(model_path: Path, prompt: str, image: Path | None, max_new_tokens: int = 8) -> str:
    folder = model_dir(model_path)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=False)
    model: Any = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=False, dtype=torch.float32)
    items: list[object] = [prompt]
    if image is not None:
        with Image.open(image) as im:
            items.append(im.convert("RGB"))
    batch = processor(items, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            max_new_tokens=max_new_tokens,
            do_sample=False,
        )
    return str(processor.tokenizer.decode(out[0, batch["input_ids"].shape[1] :]))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_path", type=Path, required=True, help="the release's model/ directory (or the release)")
    p.add_argument("--image_input", type=Path, help="an image of the scene (PNG, JPEG...)")
    p.add_argument("--text_prompt", required=True, help="the question")
    p.add_argument("--max_new_tokens", type=int, default=8)
    args = p.parse_args(argv)
    print(f"answer: {answer(args.model_path, args.text_prompt, args.image_input, args.max_new_tokens)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
