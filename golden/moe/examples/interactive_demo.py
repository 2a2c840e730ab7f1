"""The chapter's interactive demo, as an app whose callbacks run without a server.

    python examples/interactive_demo.py --model_path model/            # a chat in the terminal
    python examples/interactive_demo.py --model_path model/ --headless # a scripted session, for CI

``Assistant`` holds the state of one conversation (the scene image, the turns) and exposes the
callbacks a UI wires to its widgets: ``on_image(path)``, ``on_message(text) -> reply`` and
``on_reset()``. A web UI (Gradio, Streamlit) binds the same three functions to an upload box, a
text box and a button; it is not shipped because it would need a web framework the release does
not depend on. ``--headless`` drives the callbacks with a fixed script and prints the transcript.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw
from transformers import AutoModelForCausalLM, AutoProcessor

import vla_reference.processor  # noqa: F401 - registers VLAProcessor with AutoProcessor


class Assistant:
    """One conversation with the release's model: callbacks for a UI."""

    def __init__(self, model_path: Path, max_new_tokens: int = 8) -> None:
        folder = model_path / "model" if (model_path / "model" / "config.json").is_file() else model_path
        self.processor = AutoProcessor.from_pretrained(folder, trust_remote_code=False)
        self.model: Any = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=False, dtype=torch.float32)
        self.max_new_tokens = max_new_tokens
        self.on_reset()

    def on_reset(self) -> None:
        self.image: Image.Image | None = None
        self.turns: list[dict[str, str]] = []
        self.history = torch.zeros((1, 0), dtype=torch.long)  # the conversation's token ids so far

    def on_image(self, image: Path | Image.Image) -> str:
        if isinstance(image, Image.Image):
            self.image = image.convert("RGB")
        else:
            with Image.open(image) as im:
                self.image = im.convert("RGB")
        return f"scene loaded ({self.image.width}x{self.image.height})"

    def on_message(self, text: str) -> str:
        # the scene (on the first turn) and the question through the processor; earlier turns as
        # the token ids they were (a reply holds control tokens that are not text to re-encode)
        items: list[Any] = [self.image] if self.image is not None and not self.turns else []
        items.append(f"User: {text}\nAssistant:")
        ids = self.processor(items, return_tensors="pt")["input_ids"]
        if self.history.shape[1]:
            ids = torch.cat([self.history, ids[:, 1:]], dim=1)  # one BOS, at the start
        with torch.no_grad():
            out = self.model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=self.max_new_tokens, do_sample=False
            )
        self.history = out
        reply = str(self.processor.tokenizer.decode(out[0, ids.shape[1] :]))
        self.turns.append({"user": text, "assistant": reply})
        return reply


def demo_scene() -> Image.Image:
    im = Image.new("RGB", (48, 32), (90, 90, 90))
    ImageDraw.Draw(im).ellipse([(2, 2), (8, 8)], fill=(220, 20, 20))
    return im


SCRIPT = ("What do you see?", "Should the car stop?")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_path", type=Path, required=True, help="the release's model/ directory (or the release)")
    p.add_argument("--headless", action="store_true", help="run a scripted session and print the transcript")
    args = p.parse_args(argv)
    app = Assistant(args.model_path)
    if args.headless:
        print(app.on_image(demo_scene()))
        for question in SCRIPT:
            print(f"user: {question}")
            print(f"assistant: {app.on_message(question)}")
        print(json.dumps({"turns": app.turns}, ensure_ascii=False))
        return 0
    print("an image path loads a scene, 'reset' starts over, an empty line ends", file=sys.stderr)
    for line in sys.stdin:
        text = line.strip()
        if not text:
            break
        if text == "reset":
            app.on_reset()
        elif Path(text).is_file():
            print(app.on_image(Path(text)))
        else:
            print(f"assistant: {app.on_message(text)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
