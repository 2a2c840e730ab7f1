"""The input items a VLAProcessor sequence is made of (plain ``str`` is text, a PIL image or uint8 array an image)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Video", "Audio", "Script3D", "IPA"]


@dataclass(frozen=True, eq=False)
class Video:
    """Frames of one camera and the rate they were recorded at.

    Attributes:
        frames: A sequence of images (PIL or uint8 ``(H, W[, C])``) or one uint8 array ``(T, H, W[, C])``.
        fps: Frames per second of ``frames``. Required: sampling and timestamps depend on it, and a
            guessed rate puts every timestamp in the wrong place (Qwen3-VL#2068).
        camera: The camera's name; one of the processor config's ``cameras``.

    Example:
        >>> Video(frames, fps=10.0, camera="front")  # doctest: +SKIP
    """

    frames: Any
    fps: float | None
    camera: str


@dataclass(frozen=True, eq=False)
class Audio:
    """Mono float samples in [-1, 1] and their sampling rate (resampled to the config's if they differ).

    Example:
        >>> Audio(np.zeros(16000, np.float32), sampling_rate=16000)  # doctest: +SKIP
    """

    samples: Any
    sampling_rate: int | None


@dataclass(frozen=True)
class Script3D:
    """A 3D scene script in the grammar of :mod:`.script3d` (docs/processor.md)."""

    text: str


@dataclass(frozen=True)
class IPA:
    """A phonetic transcription, segmented into the config's ``ipa_phones``."""

    text: str
