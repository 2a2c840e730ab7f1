"""Typed, validated views of the processor's saved config: one frozen record per section.

Every value the processor uses comes from ``processor_config.json`` through these records; none has
a default here. Parsing collects every problem of a section and raises them together, naming
``<section>.<key>``, what was found and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Final

from .errors import ProcessorConfigError

__all__ = [
    "PROCESSOR_CONFIG",
    "LEGACY_PREPROCESSOR_CONFIG",
    "LEGACY_VIDEO_CONFIG",
    "Filter",
    "FILTERS",
    "FITS",
    "TOKEN_ROLES",
    "TEMPLATE_ROLES",
    "STAT_KEYS",
    "ImageConfig",
    "VideoConfig",
    "AudioConfig",
    "NormStats",
    "ActionConfig",
    "ProcessorConfig",
]

PROCESSOR_CONFIG: Final = "processor_config.json"
LEGACY_PREPROCESSOR_CONFIG: Final = "preprocessor_config.json"  # transformers 4 readers: image + audio keys
LEGACY_VIDEO_CONFIG: Final = "video_preprocessor_config.json"  # transformers 4.5x readers: video keys


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
TOKEN_MODES: Final = ("vq", "placeholder")
PADDING_SIDES: Final = ("right", "left")
WINDOWS: Final = ("hann",)
PAD_MODES: Final = ("reflect", "constant")
MEL_SCALES: Final = ("slaney", "htk")
MEL_NORMS: Final = ("slaney", None)
RESAMPLINGS: Final = ("fft",)
NORMALIZATIONS: Final = ("q01_q99", "mean_std")

# fixed delimiter tokens, by role
TOKEN_ROLES: Final = (
    "image_start",
    "image_end",
    "row_sep",
    "image",
    "video_start",
    "video_end",
    "audio_start",
    "audio_end",
    "script_start",
    "script_end",
    "ipa_start",
    "ipa_end",
    "action_start",
    "action_end",
)
# token families, by role: str.format templates filled with an index or a name
TEMPLATE_ROLES: Final = ("visual_code", "audio_code", "action_bin", "timestamp", "camera", "action", "ipa", "script")
# per-dimension statistics a norm_stats entry may carry (OpenVLA's dataset_statistics names)
STAT_KEYS: Final = ("q01", "q99", "mean", "std", "min", "max", "mask")
_NEEDS: Final = {"q01_q99": ("q01", "q99"), "mean_std": ("mean", "std")}
_IGNORED: Final = ("image_processor_type", "video_processor_type", "feature_extractor_type", "processor_class")
_MISSING: Final = object()


class _Reader:
    """Reads one config section, collecting every problem before raising them together."""

    def __init__(self, data: Mapping[str, Any], section: str) -> None:
        self.data = data
        self.section = section
        self.problems: list[tuple[str, str]] = []
        self.seen: set[str] = set()

    def fail(self, key: str, message: str) -> None:
        self.problems.append((key, message))

    def raw(self, key: str) -> Any:
        self.seen.add(key.split(".")[0])
        value: Any = self.data
        for part in key.split("."):
            if not isinstance(value, Mapping) or part not in value:
                self.fail(key, "is missing")
                return _MISSING
            value = value[part]
        return value

    def flag(self, key: str) -> bool:
        v = self.raw(key)
        if v is _MISSING:
            return False
        if not isinstance(v, bool):
            self.fail(key, f"must be true or false, found {v!r}")
            return False
        return v

    def integer(self, key: str, *, low: int | None = None) -> int:
        v = self.raw(key)
        return 0 if v is _MISSING else self._int(key, v, low)

    def _int(self, key: str, v: Any, low: int | None) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            self.fail(key, f"must be an integer, found {v!r}")
            return 0
        if low is not None and v < low:
            self.fail(key, f"must be >= {low}, found {v}")
        return v

    def number(self, key: str, *, positive: bool = False) -> float:
        v = self.raw(key)
        return 0.0 if v is _MISSING else self._float(key, v, positive)

    def _float(self, key: str, v: Any, positive: bool) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            self.fail(key, f"must be a finite number, found {v!r}")
            return 0.0
        if positive and v <= 0:
            self.fail(key, f"must be > 0, found {v!r}")
        return float(v)

    def choice(self, key: str, choices: Sequence[Any]) -> Any:
        v = self.raw(key)
        if v is _MISSING:
            return choices[0]
        if v not in choices:
            self.fail(key, f"must be one of {list(choices)}, found {v!r}")
            return choices[0]
        return v

    def text(self, key: str, *, optional: bool = False) -> str | None:
        v = self.raw(key)
        if v is _MISSING or (optional and v is None):
            return None
        if not isinstance(v, str) or not v:
            self.fail(key, f"must be a non-empty string{' or null' if optional else ''}, found {v!r}")
            return None
        return v

    def floats(self, key: str, *, n: int | None = None, positive: bool = False) -> tuple[float, ...]:
        v = self.raw(key)
        if v is _MISSING:
            return ()
        return self.float_list(key, v, n=n, positive=positive)

    def float_list(self, key: str, v: Any, *, n: int | None = None, positive: bool = False) -> tuple[float, ...]:
        if not isinstance(v, (list, tuple)) or (n is not None and len(v) != n) or not v:
            self.fail(key, f"must be a list of {n or 'one or more'} numbers, found {v!r}")
            return ()
        return tuple(self._float(f"{key}[{i}]", x, positive) for i, x in enumerate(v))

    def ints(self, key: str, *, n: int, low: int, high: int) -> tuple[int, ...]:
        v = self.raw(key)
        if v is _MISSING:
            return ()
        if not isinstance(v, (list, tuple)) or len(v) != n:
            self.fail(key, f"must be a list of {n} integers, found {v!r}")
            return ()
        out = tuple(self._int(f"{key}[{i}]", x, low) for i, x in enumerate(v))
        for i, x in enumerate(out):
            if x > high:
                self.fail(f"{key}[{i}]", f"must be <= {high}, found {x}")
        return out

    def file(self, key: str, *, optional: bool = False) -> str | None:
        """A file name beside the config: relative, no ``..``, forward slashes."""
        v = self.text(key, optional=optional)
        if v is not None and (v.startswith("/") or "\\" in v or ".." in v.split("/")):
            self.fail(key, f"must be a relative file name inside the model directory, found {v!r}")
            return None
        return v

    def strs(self, key: str) -> tuple[str, ...]:
        v = self.raw(key)
        if v is _MISSING:
            return ()
        if not isinstance(v, (list, tuple)) or not v or not all(isinstance(x, str) and x for x in v):
            self.fail(key, f"must be a list of non-empty strings, found {v!r}")
            return ()
        if len(set(v)) != len(v):
            dupes = sorted({x for x in v if v.count(x) > 1})
            self.fail(key, f"must not repeat entries, found {dupes} more than once")
        return tuple(v)

    def str_map(self, key: str, roles: Sequence[str]) -> dict[str, str]:
        v = self.raw(key)
        if v is _MISSING:
            return {}
        if not isinstance(v, Mapping):
            self.fail(key, f"must be an object, found {v!r}")
            return {}
        out = {}
        for role in roles:
            s = v.get(role)
            if not isinstance(s, str) or not s:
                self.fail(f"{key}.{role}", f"must be a non-empty string, found {s!r}")
            else:
                out[role] = s
        for extra in sorted(set(v) - set(roles)):
            self.fail(f"{key}.{extra}", f"is not a known role; expected only {list(roles)}")
        return out

    def done(self, *, strict: bool = True) -> None:
        if strict:
            for key in sorted(set(self.data) - self.seen - set(_IGNORED)):
                self.fail(key, "is not a known key (misspelled?)")
        if not self.problems:
            return
        lines = "; ".join(f"{self.section}.{k} {m}" for k, m in self.problems)
        key = f"{self.section}.{self.problems[0][0]}" if len(self.problems) == 1 else self.section
        raise ProcessorConfigError(
            f"{len(self.problems)} problem(s) in {PROCESSOR_CONFIG} {self.section}: {lines}",
            key=key,
            fix="correct these keys to the values the model was trained with (docs/processor.md lists every key)",
        )


def _image_fields(r: _Reader) -> dict[str, Any]:
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
        r = _Reader(data, section)
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
        r = _Reader(data, section)
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
        r = _Reader(data, section)
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


@dataclass(frozen=True)
class NormStats:
    """One dataset key's per-dimension statistics; ``stats`` keeps every array as saved."""

    key: str
    stats: Mapping[str, tuple[Any, ...]]

    @property
    def dim(self) -> int:
        return len(self.stats["mask"])

    def array(self, name: str) -> tuple[float, ...]:
        return tuple(float(x) for x in self.stats[name])

    @property
    def mask(self) -> tuple[bool, ...]:
        return tuple(bool(x) for x in self.stats["mask"])

    def to_json(self) -> dict[str, list[Any]]:
        return {name: list(values) for name, values in self.stats.items()}


def _norm_stats(r: _Reader, key: str, value: Any, normalization: str) -> NormStats | None:
    where = f"norm_stats.{key}"
    if not isinstance(value, Mapping):
        r.fail(where, f"must be an object of per-dimension lists, found {value!r}")
        return None
    before = len(r.problems)
    stats: dict[str, tuple[Any, ...]] = {}
    for name in sorted(set(value) - set(STAT_KEYS)):
        r.fail(f"{where}.{name}", f"is not a statistic; expected only {list(STAT_KEYS)}")
    mask = value.get("mask")
    if not isinstance(mask, list) or not mask or not all(isinstance(m, bool) for m in mask):
        r.fail(f"{where}.mask", f"must be a list of true/false per dimension, found {mask!r}")
        return None
    stats["mask"] = tuple(mask)
    for name in STAT_KEYS[:-1]:
        if name in value:
            stats[name] = r.float_list(f"{where}.{name}", value[name], n=len(mask))
    for name in _NEEDS[normalization]:
        if name not in stats:
            r.fail(
                f"{where}.{name}", f"is missing; normalization {normalization!r} needs {list(_NEEDS[normalization])}"
            )
    if len(r.problems) > before:
        return None
    for d, on in enumerate(mask):
        if not on:
            continue
        if normalization == "q01_q99" and not stats["q99"][d] > stats["q01"][d]:
            r.fail(f"{where}.q99[{d}]", f"must exceed q01[{d}] ({stats['q01'][d]}), found {stats['q99'][d]}")
        if normalization == "mean_std" and not stats["std"][d] > 0:
            r.fail(f"{where}.std[{d}]", f"must be > 0 for a normalised dimension, found {stats['std'][d]}")
    return NormStats(key, stats)


@dataclass(frozen=True)
class ActionConfig:
    """Continuous actions: normalise with a dataset key's statistics, then ``n_bins`` uniform bins."""

    n_bins: int
    bin_range: tuple[float, float]
    normalization: str
    norm_stats: Mapping[str, NormStats]

    @classmethod
    def from_json(cls, data: Any, section: str = "actions") -> ActionConfig:
        if not isinstance(data, Mapping):
            raise ProcessorConfigError(
                f"{PROCESSOR_CONFIG} {section} must be an object, found {data!r}",
                key=section,
                fix="give n_bins, bin_range, normalization and norm_stats (docs/processor.md)",
            )
        r = _Reader(data, section)
        n_bins = r.integer("n_bins", low=2)
        bin_range = r.floats("bin_range", n=2)
        if len(bin_range) == 2 and not bin_range[0] < bin_range[1]:
            r.fail("bin_range", f"must be [low, high] with low < high, found {list(bin_range)}")
        normalization = r.choice("normalization", NORMALIZATIONS)
        raw = r.raw("norm_stats")
        stats: dict[str, NormStats] = {}
        if raw is not _MISSING:
            if not isinstance(raw, Mapping) or not raw:
                r.fail("norm_stats", f"must map one or more dataset keys to statistics, found {raw!r}")
            else:
                for key, value in raw.items():
                    ns = _norm_stats(r, key, value, normalization)
                    if ns is not None:
                        stats[key] = ns
        r.done()
        return cls(n_bins, (bin_range[0], bin_range[1]), normalization, stats)

    def to_json(self) -> dict[str, Any]:
        return {
            "n_bins": self.n_bins,
            "bin_range": list(self.bin_range),
            "normalization": self.normalization,
            "norm_stats": {k: s.to_json() for k, s in self.norm_stats.items()},
        }


# the processor-level keys of processor_config.json, in VLAProcessor.__init__ order
PROCESSOR_KEYS: Final = (
    "image_token_mode",
    "add_bos_token",
    "padding_side",
    "tokens",
    "token_templates",
    "visual_token_offset",
    "audio_token_offset",
    "action_token_offset",
    "timestamp_token_offset",
    "n_timestamps",
    "cameras",
    "ipa_phones",
    "script_decimals",
    "actions",
)


@dataclass(frozen=True)
class ProcessorConfig:
    """The processor-level keys: token layout, offsets into the added tokens, inventories, actions."""

    image_token_mode: str
    add_bos_token: bool
    padding_side: str
    tokens: Mapping[str, str]
    token_templates: Mapping[str, str]
    visual_token_offset: int
    audio_token_offset: int
    action_token_offset: int
    timestamp_token_offset: int
    n_timestamps: int
    cameras: tuple[str, ...]
    ipa_phones: tuple[str, ...]
    script_decimals: int
    actions: ActionConfig

    @classmethod
    def from_json(cls, data: Mapping[str, Any], section: str = "processor") -> ProcessorConfig:
        r = _Reader(data, section)
        fields = dict(
            image_token_mode=r.choice("image_token_mode", TOKEN_MODES),
            add_bos_token=r.flag("add_bos_token"),
            padding_side=r.choice("padding_side", PADDING_SIDES),
            tokens=r.str_map("tokens", TOKEN_ROLES),
            token_templates=r.str_map("token_templates", TEMPLATE_ROLES),
            visual_token_offset=r.integer("visual_token_offset", low=0),
            audio_token_offset=r.integer("audio_token_offset", low=0),
            action_token_offset=r.integer("action_token_offset", low=0),
            timestamp_token_offset=r.integer("timestamp_token_offset", low=0),
            n_timestamps=r.integer("n_timestamps", low=1),
            cameras=r.strs("cameras"),
            ipa_phones=r.strs("ipa_phones"),
            script_decimals=r.integer("script_decimals", low=0),
        )
        for role, template in fields["token_templates"].items():
            if template.count("{}") != 1:
                r.fail(f"token_templates.{role}", f"must contain exactly one '{{}}', found {template!r}")
        actions = r.raw("actions")
        r.done(strict=False)  # transformers passes its own kwargs alongside
        return cls(**fields, actions=ActionConfig.from_json(actions))

    def to_json(self) -> dict[str, Any]:
        return {
            "image_token_mode": self.image_token_mode,
            "add_bos_token": self.add_bos_token,
            "padding_side": self.padding_side,
            "tokens": dict(self.tokens),
            "token_templates": dict(self.token_templates),
            "visual_token_offset": self.visual_token_offset,
            "audio_token_offset": self.audio_token_offset,
            "action_token_offset": self.action_token_offset,
            "timestamp_token_offset": self.timestamp_token_offset,
            "n_timestamps": self.n_timestamps,
            "cameras": list(self.cameras),
            "ipa_phones": list(self.ipa_phones),
            "script_decimals": self.script_decimals,
            "actions": self.actions.to_json(),
        }


def _json_keys(record: type) -> frozenset[str]:
    names = {f.name for f in fields(record)}
    return frozenset(names - {"height", "width", "pixels"} | ({"size"} if "height" in names else set()))


# the legacy preprocessor_config.json holds the image and the audio keys side by side
_LEGACY_OWN: Final = {
    "image_processor_type": _json_keys(ImageConfig),
    "feature_extractor_type": _json_keys(AudioConfig),
}


def own_keys(kwargs: dict[str, Any], type_key: str) -> dict[str, Any]:
    """From a merged legacy ``preprocessor_config.json`` (both type keys present), only this processor's keys."""
    if not all(k in kwargs for k in _LEGACY_OWN):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in _LEGACY_OWN[type_key]}
