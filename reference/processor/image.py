"""Images: RGB, fit to (height, width) with PIL, rescale, normalise; VQ codes over patches; and back.

The pipeline, each step's parameters read from :class:`~.config.ImageConfig`:

1. ``as_rgb``: PIL image, or a uint8 array/tensor ``(H, W)``, ``(H, W, 1|3|4)`` (channels last);
   converted to RGB by PIL (alpha dropped, palette expanded, grey replicated).
2. ``fit``: ``stretch`` resizes to (height, width); ``crop`` resizes the centred region of the
   target aspect ratio (PIL ``box``, exact fractions, no integer rounding of the offset);
   ``pad`` letterboxes: resize to fit inside, rounded half up, then paste at
   ``((width - w') // 2, (height - h') // 2)`` on a canvas of ``pad_color`` (odd leftovers go
   right and bottom). PIL filters, ``reducing_gap=None``: PIL antialiases every filter but NEAREST.
3. ``rescale`` then ``normalize`` in float64, returned as float32 ``[3, height, width]`` (RGB order).

VQ: the float32 pixels (upcast to float64) are cut into ``patch_size`` squares, each flattened in
(channel, dy, dx) order and mapped to its nearest codebook row (:func:`~.codebook.nearest`).
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from PIL import Image
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_base import BatchFeature, ImageProcessingMixin

from .codebook import VISUAL_TENSOR, Codebook, nearest
from .config import own_keys
from .errors import CodebookError, ItemError
from .hub import CodebookLoader, hub_kwargs, resolve_file
from .media_config import ImageConfig

__all__ = [
    "as_rgb",
    "letterbox",
    "crop_box",
    "fit",
    "to_pixels",
    "preprocess_image",
    "patchify",
    "unpatchify",
    "vq_encode",
    "vq_decode",
    "to_image",
    "load_visual_codebook",
    "VLAImageProcessor",
]

_HIGH_DEPTH: Final = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # PIL would clip these to 8 bits


def as_rgb(image: Any, *, convert_rgb: bool) -> Image.Image:
    """A PIL RGB image from a PIL image or a uint8 array/tensor (channels last).

    Raises:
        ItemError: not an image, not uint8, an unsupported shape or mode, or an empty image.
    """
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ItemError(
                f"image array has dtype {image.dtype}, expected uint8",
                fix="pass uint8 pixels (e.g. (x * 255).round().astype(np.uint8)) or a PIL image",
            )
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
            raise ItemError(
                f"image array has shape {tuple(image.shape)}, expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)",
                fix="pass channels last (np.moveaxis(x, 0, -1) for a (C, H, W) array)",
            )
        if 0 in image.shape:
            raise ItemError(f"image array has shape {tuple(image.shape)}: no pixels", fix="drop the empty image")
        image = Image.fromarray(np.ascontiguousarray(image))
    if not isinstance(image, Image.Image):
        raise ItemError(
            f"{type(image).__name__} is not an image",
            fix="pass a PIL image or a uint8 numpy array / torch tensor (H, W[, C])",
        )
    if image.width == 0 or image.height == 0:
        raise ItemError(f"image is {image.width}x{image.height}: no pixels", fix="drop the empty image")
    if image.mode in _HIGH_DEPTH:
        raise ItemError(
            f"image mode {image.mode!r} has more than 8 bits per channel; PIL would clip it",
            fix="scale it to 8-bit RGB yourself, with the range the model was trained on",
        )
    if image.mode != "RGB":
        if not convert_rgb:
            raise ItemError(f"image mode {image.mode!r} but do_convert_rgb is false", fix="pass an RGB image")
        image = image.convert("RGB")
    return image


def letterbox(w: int, h: int, width: int, height: int) -> tuple[int, int, int, int]:
    """``(w', h', left, top)``: the size that fits (w, h) into (width, height) and where it goes.

    >>> letterbox(64, 32, 32, 32)
    (32, 16, 0, 8)
    """
    scale = min(Fraction(width, w), Fraction(height, h))
    nw = max(1, math.floor(w * scale + Fraction(1, 2)))
    nh = max(1, math.floor(h * scale + Fraction(1, 2)))
    return nw, nh, (width - nw) // 2, (height - nh) // 2


def crop_box(w: int, h: int, width: int, height: int) -> tuple[float, float, float, float]:
    """The centred region of (w, h) with the aspect ratio of (width, height), as a PIL box.

    >>> crop_box(64, 32, 32, 32)
    (16.0, 0.0, 48.0, 32.0)
    """
    if w * height > width * h:  # wider than the target: keep the full height
        cw = Fraction(h * width, height)
        left = (w - cw) / 2
        return float(left), 0.0, float(left + cw), float(h)
    ch = Fraction(w * height, width)
    top = (h - ch) / 2
    return 0.0, float(top), float(w), float(top + ch)


def fit(image: Image.Image, cfg: ImageConfig) -> Image.Image:
    """Resize an RGB image to (cfg.height, cfg.width) by ``cfg.fit`` (see the module docstring)."""
    size = (cfg.width, cfg.height)
    if cfg.fit == "stretch":
        return image.resize(size, cfg.resample, reducing_gap=None)
    if cfg.fit == "crop":
        return image.resize(size, cfg.resample, box=crop_box(*image.size, *size), reducing_gap=None)
    nw, nh, left, top = letterbox(*image.size, *size)
    canvas = Image.new("RGB", size, tuple(cfg.pad_color))
    canvas.paste(image.resize((nw, nh), cfg.resample, reducing_gap=None), (left, top))
    return canvas


def to_pixels(image: Image.Image, cfg: ImageConfig) -> np.ndarray:
    """Rescale and normalise a fitted RGB image: float32 ``[3, height, width]``."""
    x = np.asarray(image, dtype=np.float64)
    if cfg.do_rescale:
        x = x * cfg.rescale_factor
    if cfg.do_normalize:
        x = (x - np.asarray(cfg.image_mean)) / np.asarray(cfg.image_std)
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def preprocess_image(image: Any, cfg: ImageConfig) -> np.ndarray:
    """The whole pipeline for one image: float32 ``[3, height, width]``.

    Example:
        >>> saved = json.loads(Path("model/processor_config.json").read_text())  # doctest: +SKIP
        >>> cfg = ImageConfig.from_json({**saved["image_processor"], "image_processor_type": None})  # doctest: +SKIP
        >>> preprocess_image(Image.new("RGB", (640, 480), (255, 0, 0)), cfg).shape  # doctest: +SKIP
        (3, 32, 32)
    """
    return to_pixels(fit(as_rgb(image, convert_rgb=cfg.do_convert_rgb), cfg), cfg)


def patchify(pixels: np.ndarray, patch_size: int) -> np.ndarray:
    """``[C, H, W]`` -> ``[(H/p) * (W/p), C * p * p]``: patches row-major, each in (channel, dy, dx) order."""
    c, h, w = pixels.shape
    p = patch_size
    grid = pixels.reshape(c, h // p, p, w // p, p).transpose(1, 3, 0, 2, 4)
    return grid.reshape((h // p) * (w // p), c * p * p)


def unpatchify(vectors: np.ndarray, rows: int, cols: int, patch_size: int) -> np.ndarray:
    """Inverse of :func:`patchify`: ``[rows * cols, C * p * p]`` -> ``[C, rows * p, cols * p]``."""
    p = patch_size
    c = vectors.shape[1] // (p * p)
    grid = vectors.reshape(rows, cols, c, p, p).transpose(2, 0, 3, 1, 4)
    return grid.reshape(c, rows * p, cols * p)


def vq_encode(pixels: np.ndarray, codebook: np.ndarray, patch_size: int) -> np.ndarray:
    """Codes ``[H/p, W/p]`` (int64) of float32 pixels ``[3, H, W]``: nearest row in float64."""
    rows, cols = pixels.shape[1] // patch_size, pixels.shape[2] // patch_size
    vectors = patchify(np.asarray(pixels, dtype=np.float32).astype(np.float64), patch_size)
    return nearest(vectors, codebook).reshape(rows, cols)


def vq_decode(codes: np.ndarray, codebook: np.ndarray, patch_size: int) -> np.ndarray:
    """Pixels ``[3, H, W]`` (float32) from codes ``[H/p, W/p]``: each patch its code's row (lossy)."""
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim != 2 or codes.min(initial=0) < 0 or codes.max(initial=0) >= len(codebook):
        raise ItemError(
            f"codes must be a 2-D grid of indices in [0, {len(codebook)}), found shape {codes.shape}",
            fix="pass the codes the processor returned (image_codes / video_codes)",
        )
    rows, cols = codes.shape
    return unpatchify(np.asarray(codebook)[codes.reshape(-1)], rows, cols, patch_size).astype(np.float32)


def to_image(pixels: np.ndarray, cfg: ImageConfig) -> Image.Image:
    """Undo normalise and rescale, round half to even, clip to uint8: the PIL image of ``[3, H, W]``."""
    x = np.asarray(pixels, dtype=np.float64).transpose(1, 2, 0)
    if cfg.do_normalize:
        x = x * np.asarray(cfg.image_std) + np.asarray(cfg.image_mean)
    if cfg.do_rescale:
        x = x / cfg.rescale_factor
    return Image.fromarray(np.clip(np.rint(x), 0, 255).astype(np.uint8))


def load_visual_codebook(cfg: ImageConfig, path: Path) -> Codebook:
    """The visual codebook at ``path``, checked against the config's SHA-256 and sizes."""
    if cfg.codebook_sha256 is None:
        raise CodebookError("the config names no visual codebook", key="codebook_file", fix="set codebook_file")
    return Codebook.load(
        path,
        file=cfg.codebook_file or path.name,
        tensor=VISUAL_TENSOR,
        sha256=cfg.codebook_sha256,
        shape=(cfg.codebook_size, 3 * cfg.patch_size**2),
    )


class _PixelProcessor(CodebookLoader):
    """What the image and video processors share: the config record, the codebook, VQ and its inverse."""

    pixels: ImageConfig
    codebook: Codebook | None

    def _attach_codebook(self, codebook: Codebook | None) -> None:
        cfg = self.pixels
        if codebook is not None:
            if cfg.codebook_sha256 is not None and codebook.sha256 != cfg.codebook_sha256:
                raise CodebookError(
                    f"SHA-256 is {codebook.sha256}, the config pins {cfg.codebook_sha256}",
                    path=codebook.file,
                    key="codebook_sha256",
                    fix="pass the codebook the config names",
                )
            expected = (cfg.codebook_size, 3 * cfg.patch_size**2)
            if tuple(codebook.vectors.shape) != expected:
                raise CodebookError(
                    f"shape {tuple(codebook.vectors.shape)}, the config expects {expected}",
                    path=codebook.file,
                    key=VISUAL_TENSOR,
                    fix="make codebook_size and patch_size match the codebook",
                )
        self.codebook = codebook

    def _load_codebook_from(self, pretrained: str | os.PathLike[str], kwargs: dict[str, Any]) -> None:
        if self.pixels.codebook_file is not None:
            path = resolve_file(pretrained, self.pixels.codebook_file, hub_kwargs(kwargs))
            self.codebook = load_visual_codebook(self.pixels, path)

    def _vectors(self) -> np.ndarray:
        if self.codebook is None:
            raise CodebookError(
                "no visual codebook is loaded",
                key="codebook_file",
                fix="load the processor with from_pretrained (it reads codebook_file) or pass codebook=",
            )
        return self.codebook.vectors

    def encode(self, pixel_values: np.ndarray | torch.Tensor) -> np.ndarray:
        """VQ codes ``[H/p, W/p]`` of one float32 ``[3, H, W]`` pixel tensor."""
        pixels = pixel_values.numpy() if isinstance(pixel_values, torch.Tensor) else pixel_values
        return vq_encode(pixels, self._vectors(), self.pixels.patch_size)

    def decode(self, codes: np.ndarray | torch.Tensor) -> np.ndarray:
        """Pixels ``[3, H, W]`` from VQ codes ``[H/p, W/p]`` (lossy: each patch becomes its code)."""
        codes = codes.numpy() if isinstance(codes, torch.Tensor) else codes
        return vq_decode(codes, self._vectors(), self.pixels.patch_size)

    def to_image(self, pixel_values: np.ndarray | torch.Tensor) -> Image.Image:
        """The PIL image of float32 ``[3, H, W]`` pixels (normalisation undone)."""
        pixels = pixel_values.numpy() if isinstance(pixel_values, torch.Tensor) else pixel_values
        return to_image(pixels, self.pixels)


class VLAImageProcessor(_PixelProcessor, PilBackend):
    """The reference image processor, pinned to the PIL backend (whatever backend the auto class asks for).

    Every parameter is a key of :class:`~.config.ImageConfig`; there are no defaults.

    Example:
        >>> ip = AutoImageProcessor.from_pretrained("release/model")   # doctest: +SKIP
        >>> ip(Image.new("RGB", (50, 20)), return_codes=True)["image_codes"].shape  # doctest: +SKIP
        (1, 4, 4)
    """

    model_input_names = ["pixel_values"]

    def __init__(self, codebook: Codebook | None = None, **kwargs: Any) -> None:
        kwargs = own_keys(kwargs, "image_processor_type")
        kwargs.pop("image_processor_type", None)
        self.pixels = ImageConfig.from_json(kwargs)
        ImageProcessingMixin.__init__(self)  # not PilBackend's: every attribute comes from the config
        for key, value in self.pixels.to_json().items():
            if key != "backend":  # PilBackend.backend is a read-only property: "pil"
                setattr(self, key, value)
        self._attach_codebook(codebook)

    def to_dict(self) -> dict[str, Any]:
        return {**self.pixels.to_json(), "image_processor_type": type(self).__name__}

    def preprocess(  # type: ignore[override]
        self, images: Any, *, return_codes: bool = False, return_tensors: str | None = None
    ) -> BatchFeature:
        """``pixel_values`` ``[N, 3, height, width]`` and, with ``return_codes``, ``image_codes`` ``[N, rows, cols]``.

        Raises:
            ItemError: an input is not a valid image (the message names its index).
        """
        batch = list(images) if isinstance(images, (list, tuple)) else [images]
        pixels = []
        for i, image in enumerate(batch):
            try:
                pixels.append(preprocess_image(image, self.pixels))
            except ItemError as e:
                raise e.located(batch=None, index=i, kind="image") from e
        cfg = self.pixels
        empty = np.zeros((0, 3, cfg.height, cfg.width), np.float32)
        data: dict[str, Any] = {"pixel_values": np.stack(pixels) if pixels else empty}
        if return_codes:
            codes = [self.encode(p) for p in pixels]
            data["image_codes"] = np.stack(codes) if codes else np.zeros((0, *cfg.grid), np.int64)
        return BatchFeature(data, tensor_type=return_tensors)
