"""The golden preprocessing inputs, and what the reference processor makes of them.

Every input is generated here, deterministically (Pillow drawing, numpy synthesis): pure colours
for channel order, gradients and edges for interpolation, odd sizes and extreme aspect ratios,
an RGBA and a greyscale image, a short video with a known fps, tones and a sweep, 3D scripts,
IPA strings, named actions and action vectors, text with special tokens next to whitespace.
``python -m vla_reference.preprocessing DIR`` writes them as files to look at.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
from PIL import Image, ImageDraw

from ._snapshot import SNAPSHOT_SUFFIX, SnapshotData

__all__ = ["CASES", "case_items", "record", "snapshot_file", "library_versions", "SNAPSHOT_DIR", "SNAPSHOT_TEST"]

SNAPSHOT_DIR: Final = "golden/preprocessing"
SNAPSHOT_TEST: Final = "test_preprocessing"  # the conformance module: syrupy files live under its name
_TEST_NAME: Final = "test_matches_snapshot"


def _solid(color: tuple[int, int, int], size: tuple[int, int] = (32, 32)) -> Image.Image:
    return Image.new("RGB", size, color)


def _gradient(w: int, h: int) -> Image.Image:
    x = np.linspace(0, 255, w)[None, :, None]
    y = np.linspace(0, 255, h)[:, None, None]
    rgb = np.concatenate(
        [np.broadcast_to(x, (h, w, 1)), np.broadcast_to(y, (h, w, 1)), np.broadcast_to((x + y) / 2, (h, w, 1))], axis=2
    )
    return Image.fromarray(np.rint(rgb).astype(np.uint8), "RGB")


def _edges(w: int, h: int, cell: int) -> Image.Image:
    img = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for y in range(0, h, cell):
        for x in range(0, w, cell):
            if (x // cell + y // cell) % 2:
                draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=(0, 0, 0))
    draw.line([(0, h - 1), (w - 1, 0)], fill=(255, 0, 0), width=1)
    return img


def _rgba() -> Image.Image:
    img = Image.new("RGBA", (24, 40), (0, 128, 255, 255))
    ImageDraw.Draw(img).ellipse([4, 8, 20, 32], fill=(255, 255, 0, 64))
    return img


def _gray() -> Image.Image:
    return Image.fromarray(np.tile(np.arange(0, 256, 8, dtype=np.uint8), (20, 1)), "L")


def _frames(n: int, size: int = 32) -> list[Image.Image]:
    out = []
    for t in range(n):
        img = Image.new("RGB", (size, size), (20, 20, 60))
        x = 2 + 3 * t
        ImageDraw.Draw(img).rectangle([x, 10, x + 7, 17], fill=(250, 200, 0))
        out.append(img)
    return out


def _tone(freq: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * math.pi * freq * t)).astype(np.float32)


def _sweep(f0: float, f1: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * math.pi * (f0 * t + (f1 - f0) * t * t / (2 * seconds))
    return (0.4 * np.sin(phase)).astype(np.float32)


def _cases() -> dict[str, Callable[[Any], list[Any]]]:
    """Case name -> a function of the processor module (``vla_reference.processor``) giving its items."""
    return {
        "image_red": lambda vp: [_solid((255, 0, 0))],
        "image_green": lambda vp: [_solid((0, 255, 0))],
        "image_blue": lambda vp: [_solid((0, 0, 255))],
        "image_gradient": lambda vp: [_gradient(64, 48)],
        "image_edges": lambda vp: [_edges(40, 40, 5)],
        "image_odd_size": lambda vp: [_gradient(33, 17)],
        "image_tall": lambda vp: [_gradient(8, 80)],
        "image_wide": lambda vp: [_edges(120, 9, 3)],
        "image_rgba": lambda vp: [_rgba()],
        "image_grayscale": lambda vp: [_gray()],
        "video": lambda vp: [vp.Video(_frames(9), fps=3.0, camera="front")],
        "audio_tone": lambda vp: [vp.Audio(_tone(440.0, 0.25, 16000), sampling_rate=16000)],
        "audio_sweep_resampled": lambda vp: [vp.Audio(_sweep(200.0, 3000.0, 0.25, 22050), sampling_rate=22050)],
        "script3d": lambda vp: [vp.Script3D("translate 0 0 1.5\nrotate 0 90 0\ncube 2\nsphere 0.75")],
        "ipa": lambda vp: [vp.IPA("stɹˈiːt"), vp.IPA("ðə")],
        "actions_named": lambda vp: [vp.Action.TURN_LEFT, vp.Action.STOP],
        "action_vectors": lambda vp: [vp.ActionVector([[0.05, -0.8, 1.0], [0.0, 0.3, 0.0]], key="nuplan")],
        # special tokens next to whitespace: leading/trailing/double spaces and a tab around them
        "text_special_tokens": lambda vp: [" Turn left ", vp.Action.STOP, "now,  then\tstop . ", vp.IPA("ðə"), " end"],
        "mixed": lambda vp: ["Describe this driving scene:", _gradient(48, 32), "The action is:", vp.Action.SLOW_DOWN],
    }


CASES: Final[tuple[str, ...]] = tuple(_cases())


def case_items(case: str) -> list[Any]:
    """The items of one golden case (fresh objects on every call)."""
    import vla_reference.processor as vp

    return _cases()[case](vp)


def library_versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in ("pillow", "numpy", "torch", "transformers")}


def record(processor: Any, case: str, *, version: str, processor_config: dict[str, Any]) -> SnapshotData:
    """The processor's outputs on a case, with the header that explains them."""
    batch = processor(case_items(case), return_tensors="pt", return_mm_token_type_ids=True)
    outputs = {k: v for k, v in batch.items()}
    header = {
        "case": case,
        "release_version": version,
        "libraries": library_versions(),
        "processor_config": processor_config,
    }
    return SnapshotData(outputs, header)


def snapshot_file(release_root: Path, case: str) -> Path:
    """Where the snapshot of ``case`` lives in a release (syrupy's naming for the suite's test)."""
    return release_root / SNAPSHOT_DIR / SNAPSHOT_TEST / f"{_TEST_NAME}[{case}]{SNAPSHOT_SUFFIX}"


def _write_inputs(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for case in CASES:
        for i, item in enumerate(case_items(case)):
            stem = out / f"{case}-{i}"
            if isinstance(item, Image.Image):
                item.save(stem.with_suffix(".png"))
            elif hasattr(item, "frames"):
                for j, frame in enumerate(item.frames):
                    frame.save(out / f"{case}-{i}-frame{j}.png")
                stem.with_suffix(".json").write_text(json.dumps({"fps": item.fps, "camera": item.camera}))
            elif hasattr(item, "samples"):
                np.save(stem.with_suffix(".npy"), np.asarray(item.samples))
            else:
                stem.with_suffix(".txt").write_text(repr(item))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vla_reference.preprocessing", description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    _write_inputs(p.parse_args(argv).out)
    print(f"{len(CASES)} cases", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
