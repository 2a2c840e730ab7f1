"""Typed, validated views of the processor's saved config: one frozen record per section.

Every value the processor uses comes from ``processor_config.json`` through these records; none has
a default here. Parsing collects every problem of a section and raises them together, naming
``<section>.<key>``, what was found and what was expected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

from .config_reader import (
    LEGACY_PREPROCESSOR_CONFIG,
    LEGACY_VIDEO_CONFIG,
    MISSING_VALUE,
    PROCESSOR_CONFIG,
    SectionReader,
)
from .errors import ProcessorConfigError
from .media_config import AudioConfig, ImageConfig

__all__ = [
    "PROCESSOR_CONFIG",
    "LEGACY_PREPROCESSOR_CONFIG",
    "LEGACY_VIDEO_CONFIG",
    "TOKEN_ROLES",
    "TEMPLATE_ROLES",
    "STAT_KEYS",
    "NormStats",
    "ActionConfig",
    "ProcessorConfig",
]


TOKEN_MODES: Final = ("vq", "placeholder")
PADDING_SIDES: Final = ("right", "left")
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


def _norm_stats(r: SectionReader, key: str, value: Any, normalization: str) -> NormStats | None:
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
        r = SectionReader(data, section)
        n_bins = r.integer("n_bins", low=2)
        bin_range = r.floats("bin_range", n=2)
        if len(bin_range) == 2 and not bin_range[0] < bin_range[1]:
            r.fail("bin_range", f"must be [low, high] with low < high, found {list(bin_range)}")
        normalization = r.choice("normalization", NORMALIZATIONS)
        raw = r.raw("norm_stats")
        stats: dict[str, NormStats] = {}
        if raw is not MISSING_VALUE:
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
        r = SectionReader(data, section)
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
