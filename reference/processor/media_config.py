"""The image, video and audio sections of processor_config.json: resize filters, fit,
normalisation, frame sampling, the log-mel front end."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from .config_reader import SectionReader


@dataclass(frozen=True)
class Filter:
    """One PIL resampling filter: the int transformers saves as ``resample`` and whether it antialiases."""

    name: str
    pil: int
    antialiased: bool  # PIL widens the filter support by the downscale factor for all but NEAREST


FILTERS: Final[tuple[Filter, ...]] = (
    Filter("nearest", 0, False),
    Filter("lanczos", 1, True),
    Filter("bilinear", 2, True),
    Filter("bicubic", 3, True),
    Filter("box", 4, True),
    Filter("hamming", 5, True),
    Filter("mks2013", 6, True),  # Magic Kernel Sharp, Pillow >= 10.1
    Filter("mks2021", 7, True),
)

_FILTER_BY_PIL: Final = {f.pil: f for f in FILTERS}

# how an image of another aspect ratio reaches (height, width): see docs/processor.md
FITS: Final = ("pad", "crop", "stretch")

BACKENDS: Final = ("pil",)

WINDOWS: Final = ("hann",)

PAD_MODES: Final = ("reflect", "constant")

MEL_SCALES: Final = ("slaney", "htk")

MEL_NORMS: Final = ("slaney", None)

RESAMPLINGS: Final = ("fft",)


def _image_fields(r: SectionReader) -> dict[str, Any]:
    resample = r.integer("resample")
    antialias = r.flag("antialias")
    pil = _FILTER_BY_PIL.get(resample)
    if pil is None:
        r.fail("resample", f"must be a PIL filter {sorted(_FILTER_BY_PIL)}, found {resample!r}")
    elif antialias != pil.antialiased:
        # the PIL backend cannot honour the other value: record what actually happens
        r.fail(
            "antialias",
            f"is {antialias} but PIL's {pil.name} filter {'always' if pil.antialiased else 'never'} antialiases "
            f"(pytorch/vision#2950); set it to {pil.antialiased}",
        )
    codebook_file = r.file("codebook_file", optional=True)
    codebook_sha = r.text("codebook_sha256", optional=True)
    if (codebook_file is None) != (codebook_sha is None):
        r.fail("codebook_sha256", "and codebook_file must be both set or both null")
    fields = dict(
        height=r.integer("size.height", low=1),
        width=r.integer("size.width", low=1),
        resample=resample,
        antialias=antialias,
        fit=r.choice("fit", FITS),
        pad_color=r.ints("pad_color", n=3, low=0, high=255),
        do_convert_rgb=r.flag("do_convert_rgb"),
        do_rescale=r.flag("do_rescale"),
        rescale_factor=r.number("rescale_factor", positive=True),
        do_normalize=r.flag("do_normalize"),
        image_mean=r.floats("image_mean", n=3),
        image_std=r.floats("image_std", n=3, positive=True),
        patch_size=r.integer("patch_size", low=1),
        codebook_file=codebook_file,
        codebook_sha256=codebook_sha,
        codebook_size=r.integer("codebook_size", low=1),
        backend=r.choice("backend", BACKENDS),
    )
    for side in ("height", "width"):
        if fields["patch_size"] and fields[side] % fields["patch_size"]:
            r.fail(f"size.{side}", f"{fields[side]} is not a multiple of patch_size {fields['patch_size']}")
    return fields


@dataclass(frozen=True)
class ImageConfig:
    """The image pipeline: RGB, fit to (height, width), rescale, normalise; VQ patches and codebook."""

    height: int
    width: int
    resample: int
    antialias: bool
    fit: str
    pad_color: tuple[int, ...]
    do_convert_rgb: bool
    do_rescale: bool
    rescale_factor: float
    do_normalize: bool
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    patch_size: int
    codebook_file: str | None
    codebook_sha256: str | None
    codebook_size: int
    backend: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any], section: str = "image_processor") -> ImageConfig:
        r = SectionReader(data, section)
        fields = _image_fields(r)
        r.done()
        return cls(**fields)

    @property
    def filter(self) -> Filter:
        return _FILTER_BY_PIL[self.resample]

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, columns) of patches."""
        return self.height // self.patch_size, self.width // self.patch_size

    def to_json(self) -> dict[str, Any]:
        return {
            "size": {"height": self.height, "width": self.width},
            "resample": self.resample,
            "antialias": self.antialias,
            "fit": self.fit,
            "pad_color": list(self.pad_color),
            "do_convert_rgb": self.do_convert_rgb,
            "do_rescale": self.do_rescale,
            "rescale_factor": self.rescale_factor,
            "do_normalize": self.do_normalize,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "patch_size": self.patch_size,
            "codebook_file": self.codebook_file,
            "codebook_sha256": self.codebook_sha256,
            "codebook_size": self.codebook_size,
            "backend": self.backend,
        }


@dataclass(frozen=True)
class VideoConfig:
    """Frame sampling and tubelets; frames go through the same pipeline as images (``pixels``)."""

    pixels: ImageConfig
    sample_fps: float
    max_frames: int
    temporal_patch_size: int
    timestamp_interval: float

    @classmethod
    def from_json(cls, data: Mapping[str, Any], section: str = "video_processor") -> VideoConfig:
        r = SectionReader(data, section)
        pixels = _image_fields(r)
        sample_fps = r.number("sample_fps", positive=True)
        max_frames = r.integer("max_frames", low=1)
        tp = r.integer("temporal_patch_size", low=1)
        interval = r.number("timestamp_interval", positive=True)
        if tp and max_frames % tp:
            r.fail("max_frames", f"{max_frames} is not a multiple of temporal_patch_size {tp}")
        r.done()
        return cls(ImageConfig(**pixels), sample_fps, max_frames, tp, interval)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.pixels.to_json(),
            "sample_fps": self.sample_fps,
            "max_frames": self.max_frames,
            "temporal_patch_size": self.temporal_patch_size,
            "timestamp_interval": self.timestamp_interval,
        }


@dataclass(frozen=True)
class AudioConfig:
    """The log-mel front end (Whisper's keys and formula) and the residual audio codebook."""

    sampling_rate: int
    feature_size: int
    n_fft: int
    hop_length: int
    win_length: int
    window: str
    center: bool
    pad_mode: str
    fmin: float
    fmax: float
    mel_scale: str
    mel_norm: str | None
    log_floor: float
    dynamic_range: float
    log_offset: float
    log_scale: float
    padding_value: float
    resampling: str
    mel_frames_per_code: int
    n_q: int
    audio_codebook_size: int
    audio_codebook_file: str
    audio_codebook_sha256: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any], section: str = "feature_extractor") -> AudioConfig:
        r = SectionReader(data, section)
        fields = dict(
            sampling_rate=r.integer("sampling_rate", low=1),
            feature_size=r.integer("feature_size", low=1),
            n_fft=r.integer("n_fft", low=2),
            hop_length=r.integer("hop_length", low=1),
            win_length=r.integer("win_length", low=2),
            window=r.choice("window", WINDOWS),
            center=r.flag("center"),
            pad_mode=r.choice("pad_mode", PAD_MODES),
            fmin=r.number("fmin"),
            fmax=r.number("fmax", positive=True),
            mel_scale=r.choice("mel_scale", MEL_SCALES),
            mel_norm=r.choice("mel_norm", MEL_NORMS),
            log_floor=r.number("log_floor", positive=True),
            dynamic_range=r.number("dynamic_range", positive=True),
            log_offset=r.number("log_offset"),
            log_scale=r.number("log_scale", positive=True),
            padding_value=r.number("padding_value"),
            resampling=r.choice("resampling", RESAMPLINGS),
            mel_frames_per_code=r.integer("mel_frames_per_code", low=1),
            n_q=r.integer("n_q", low=1),
            audio_codebook_size=r.integer("audio_codebook_size", low=1),
            audio_codebook_file=r.file("audio_codebook_file") or "",
            audio_codebook_sha256=r.text("audio_codebook_sha256") or "",
        )
        if fields["win_length"] != fields["n_fft"]:
            r.fail("win_length", f"must equal n_fft ({fields['n_fft']}), found {fields['win_length']}")
        if not 0 <= fields["fmin"] < fields["fmax"] <= fields["sampling_rate"] / 2:
            r.fail("fmax", f"needs 0 <= fmin < fmax <= sampling_rate / 2, found {fields['fmin']}..{fields['fmax']}")
        r.done()
        return cls(**fields)

    @property
    def code_hop(self) -> int:
        """Samples per audio code frame: the codec frame rate is sampling_rate / code_hop."""
        return self.hop_length * self.mel_frames_per_code

    def to_json(self) -> dict[str, Any]:
        return {
            "sampling_rate": self.sampling_rate,
            "feature_size": self.feature_size,
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "win_length": self.win_length,
            "window": self.window,
            "center": self.center,
            "pad_mode": self.pad_mode,
            "fmin": self.fmin,
            "fmax": self.fmax,
            "mel_scale": self.mel_scale,
            "mel_norm": self.mel_norm,
            "log_floor": self.log_floor,
            "dynamic_range": self.dynamic_range,
            "log_offset": self.log_offset,
            "log_scale": self.log_scale,
            "padding_value": self.padding_value,
            "resampling": self.resampling,
            "mel_frames_per_code": self.mel_frames_per_code,
            "n_q": self.n_q,
            "audio_codebook_size": self.audio_codebook_size,
            "audio_codebook_file": self.audio_codebook_file,
            "audio_codebook_sha256": self.audio_codebook_sha256,
        }
