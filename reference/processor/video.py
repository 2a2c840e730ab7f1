"""Video: frame sampling by a pinned formula, tubelets with last-frame repetition, per-group timestamps.

For a video of ``T`` frames recorded at ``fps`` (required, never defaulted):

    n     = clamp(floor(T * sample_fps / fps), 1, max_frames)       (exact rational arithmetic)
    i_k   = floor(k * T / n),  k = 0 .. n-1                          (evenly spread, first frame kept)
    then repeat i_{n-1} until the count is a multiple of temporal_patch_size (tp).

Temporal group ``g`` holds frames ``i_{g*tp} .. i_{g*tp+tp-1}``; its timestamp token is
``<|t_k|>`` with ``k = floor(i_{g*tp} / fps / timestamp_interval)`` (seconds from the first frame).
Each frame goes through the image pipeline; a group's VQ codes are those of the mean of its
frames (float64), in the image layout.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import torch
from transformers.image_processing_base import BatchFeature, ImageProcessingMixin
from transformers.video_processing_utils import VideoProcessorMixin

from .codebook import nearest
from .errors import ItemError
from .image import _PixelProcessor, patchify, preprocess_image
from .items import Video
from .media_config import VideoConfig

__all__ = ["VideoPlan", "plan_video", "video_frames", "VideoFeatures", "VLAVideoProcessor"]


@dataclass(frozen=True)
class VideoPlan:
    """Which frames a video contributes and the timestamp index of each temporal group."""

    num_frames: int
    fps: float
    n_sampled: int
    indices: tuple[int, ...]  # sampled, then padded by repeating the last to a multiple of tp
    timestamps: tuple[int, ...]  # one per temporal group: k of <|t_k|>

    @property
    def groups(self) -> int:
        return len(self.timestamps)


def _check_fps(fps: Any) -> Fraction:
    if fps is None:
        raise ItemError(
            "fps is missing; sampling and timestamps depend on it and it is never guessed",
            fix="pass Video(frames, fps=<the recording's frame rate>, camera=...)",
        )
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not math.isfinite(fps) or fps <= 0:
        raise ItemError(f"fps must be a positive finite number, found {fps!r}", fix="pass the recording's frame rate")
    return Fraction(float(fps))


def plan_video(num_frames: int, fps: float | None, cfg: VideoConfig) -> VideoPlan:
    """The pinned sampling formula (module docstring) for ``num_frames`` frames at ``fps``.

    >>> from types import SimpleNamespace as N
    >>> cfg = N(sample_fps=2.0, max_frames=8, temporal_patch_size=2, timestamp_interval=1.0)
    >>> p = plan_video(30, 10.0, cfg)
    >>> p.indices, p.timestamps
    ((0, 5, 10, 15, 20, 25), (0, 1, 2))
    """
    rate = _check_fps(fps)
    if num_frames < 1:
        raise ItemError("the video has no frames", fix="pass at least one frame")
    tp = cfg.temporal_patch_size
    n = max(1, min(cfg.max_frames, math.floor(num_frames * Fraction(cfg.sample_fps) / rate)))
    indices = [k * num_frames // n for k in range(n)]
    indices += [indices[-1]] * (-n % tp)
    interval = Fraction(cfg.timestamp_interval)
    stamps = tuple(math.floor(indices[g] / rate / interval) for g in range(0, len(indices), tp))
    return VideoPlan(num_frames, float(fps), n, tuple(indices), stamps)  # type: ignore[arg-type]


def video_frames(frames: Any) -> Sequence[Any]:
    """The frames of ``Video.frames`` as a sequence of single images.

    Raises:
        ItemError: ``frames`` is neither a sequence of images nor a ``(T, H, W[, C])`` array.
    """
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    if isinstance(frames, np.ndarray):
        if frames.ndim not in (3, 4):
            raise ItemError(
                f"video array has shape {tuple(frames.shape)}, expected (T, H, W) or (T, H, W, C)",
                fix="stack the frames along a first time axis, channels last",
            )
        return list(frames)
    if isinstance(frames, (list, tuple)):
        return frames
    raise ItemError(
        f"video frames are a {type(frames).__name__}, expected a list of images or a (T, H, W, C) uint8 array",
        fix="decode the video to frames first (and pass its fps)",
    )


@dataclass(frozen=True)
class VideoFeatures:
    """One video processed: its plan, tubelet pixels ``[G, tp, 3, H, W]`` and VQ codes ``[G, rows, cols]``."""

    plan: VideoPlan
    pixel_values: np.ndarray
    codes: np.ndarray | None


class VLAVideoProcessor(_PixelProcessor, VideoProcessorMixin):
    """The reference video processor: PIL frames, pinned sampling, tubelets; no defaults.

    Example:
        >>> vp = AutoVideoProcessor.from_pretrained("release/model")  # doctest: +SKIP
        >>> vp([Video(frames, fps=10.0, camera="front")])["video_grid_thw"]  # doctest: +SKIP
        tensor([[3, 4, 4]])
    """

    model_input_names = ["pixel_values_videos", "video_grid_thw"]

    def __init__(self, codebook: Any = None, **kwargs: Any) -> None:
        kwargs.pop("video_processor_type", None)
        self.video = VideoConfig.from_json(kwargs)
        self.pixels = self.video.pixels
        ImageProcessingMixin.__init__(self)  # every attribute comes from the config
        for key, value in self.video.to_json().items():
            if key != "backend":
                setattr(self, key, value)
        self._attach_codebook(codebook)

    @property
    def backend(self) -> str:
        """Always ``"pil"``: frames go through the same PIL pipeline as images."""
        return "pil"

    def to_dict(self) -> dict[str, Any]:
        return {**self.video.to_json(), "video_processor_type": type(self).__name__}

    def plan(self, video: Video) -> VideoPlan:
        """The frames and timestamps ``video`` contributes (see the module docstring)."""
        return plan_video(len(video_frames(video.frames)), video.fps, self.video)

    def process_one(self, video: Video, *, return_codes: bool) -> VideoFeatures:
        """Sample, preprocess and group one video.

        Raises:
            ItemError: not a Video, fps missing or invalid, no frames, or a frame is not an image.
        """
        if not isinstance(video, Video):
            raise ItemError(f"{type(video).__name__} is not a Video", fix="wrap frames in Video(frames, fps=, camera=)")
        frames = video_frames(video.frames)
        plan = plan_video(len(frames), video.fps, self.video)
        cache: dict[int, np.ndarray] = {}
        for i in plan.indices:
            if i not in cache:
                try:
                    cache[i] = preprocess_image(frames[i], self.pixels)
                except ItemError as e:
                    raise ItemError(f"frame {i}: {e.detail}", fix=e.fix) from e
        tp = self.video.temporal_patch_size
        cfg = self.pixels
        pixels = np.stack([cache[i] for i in plan.indices]).reshape(plan.groups, tp, 3, cfg.height, cfg.width)
        codes = np.stack([self.encode_group(group) for group in pixels]) if return_codes else None
        return VideoFeatures(plan, pixels, codes)

    def encode_group(self, group: np.ndarray) -> np.ndarray:
        """VQ codes ``[rows, cols]`` of one tubelet ``[tp, 3, H, W]``: its frames' mean, in float64."""
        mean = np.asarray(group, dtype=np.float32).astype(np.float64).mean(axis=0)
        return nearest(patchify(mean, self.pixels.patch_size), self._vectors()).reshape(self.pixels.grid)

    def preprocess(  # type: ignore[override]
        self, videos: Any, *, return_codes: bool = False, return_tensors: str | None = None
    ) -> BatchFeature:
        """``pixel_values_videos`` ``[sum G, tp, 3, H, W]``, ``video_grid_thw`` ``[N, 3]`` (groups, rows, cols)
        and, with ``return_codes``, ``video_codes`` ``[sum G, rows, cols]``.
        """
        batch = list(videos) if isinstance(videos, (list, tuple)) else [videos]
        feats = []
        for i, video in enumerate(batch):
            try:
                feats.append(self.process_one(video, return_codes=return_codes))
            except ItemError as e:
                raise e.located(batch=None, index=i, kind="video") from e
        return BatchFeature(self.collate(feats, return_codes=return_codes), tensor_type=return_tensors)

    def collate(self, feats: Sequence[VideoFeatures], *, return_codes: bool) -> dict[str, np.ndarray]:
        """Concatenate per-video features along the group axis (the layout Qwen2-VL's processors use)."""
        cfg, tp = self.pixels, self.video.temporal_patch_size
        rows, cols = cfg.grid
        data = {
            "pixel_values_videos": np.concatenate([f.pixel_values for f in feats])
            if feats
            else np.zeros((0, tp, 3, cfg.height, cfg.width), np.float32),
            "video_grid_thw": np.array([[f.plan.groups, rows, cols] for f in feats], dtype=np.int64).reshape(-1, 3),
        }
        if return_codes:
            codes = [f.codes for f in feats if f.codes is not None]
            data["video_codes"] = np.concatenate(codes) if codes else np.zeros((0, rows, cols), np.int64)
        return data
