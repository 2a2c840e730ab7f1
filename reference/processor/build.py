"""The reference processor configuration the golden releases ship, and the files that carry it.

``reference_processor(tokenizer, seed=...)`` builds a complete VLAProcessor from a tokenizer built
by :func:`vla_reference.tokenizer.build_tokenizer`: 32x32 images (ImageNet mean/std, bicubic,
letterbox on the mean colour), 8x8 patches, a 64-code colour-lattice VQ codebook, 2 fps video in
tubelets of 2, a 16-mel Whisper-style front end at 16 kHz with a 2 x 16 residual codebook at 25 Hz,
and two driving datasets' action statistics. Codebooks are generated from ``seed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from ..tokenizer._build import N_ACTION_BINS, N_AUDIO_CODES, N_TIMESTAMPS, N_VISUAL_CODES, VLA_TOKENS
from .audio import VLAFeatureExtractor
from .codebook import AUDIO_TENSOR, VISUAL_TENSOR, Codebook, audio_codebooks, visual_codebook
from .image import VLAImageProcessor
from .processor import VLAProcessor
from .video import VLAVideoProcessor

__all__ = [
    "VISUAL_CODEBOOK_FILE",
    "AUDIO_CODEBOOK_FILE",
    "REFERENCE_NORM_STATS",
    "reference_processor",
    "write_processor_files",
    "norm_stats_mismatches",
]

VISUAL_CODEBOOK_FILE: Final = "visual_codebook.safetensors"
AUDIO_CODEBOOK_FILE: Final = "audio_codebook.safetensors"

# per dataset: [steering angle (rad), longitudinal acceleration (m/s^2), turn signal (-1, 0, 1)];
# the signal is already in [-1, 1], so it is not normalised (mask false)
REFERENCE_NORM_STATS: Final[dict[str, dict[str, list[Any]]]] = {
    "nuplan": {
        "mean": [0.0, -0.12, 0.0],
        "std": [0.11, 1.05, 0.42],
        "q01": [-0.42, -3.2, -1.0],
        "q99": [0.42, 2.4, 1.0],
        "mask": [True, True, False],
    },
    "waymo_open": {
        "mean": [0.01, 0.05, 0.0],
        "std": [0.09, 0.88, 0.35],
        "q01": [-0.36, -2.6, -1.0],
        "q99": [0.38, 2.1, 1.0],
        "mask": [True, True, False],
    },
}
_IMAGENET_MEAN: Final = (0.485, 0.456, 0.406)
_IMAGENET_STD: Final = (0.229, 0.224, 0.225)
_PATCH: Final = 8
_N_Q: Final = 2
_FEATURES: Final = 16


def _family(prefix: str, exclude: tuple[str, ...] = ()) -> list[str]:
    """Names of the VLA tokens ``<|{prefix}NAME|>``, in inventory order (derived, not retyped)."""
    return [t[len(prefix) + 2 : -2] for t in VLA_TOKENS if t.startswith("<|" + prefix) and t not in exclude]


def _image_config(codebook: Codebook) -> dict[str, Any]:
    return {
        "size": {"height": 32, "width": 32},
        "resample": 3,  # PIL BICUBIC
        "antialias": True,
        "fit": "pad",
        "pad_color": [round(255 * m) for m in _IMAGENET_MEAN],
        "do_convert_rgb": True,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(_IMAGENET_MEAN),
        "image_std": list(_IMAGENET_STD),
        "patch_size": _PATCH,
        "codebook_file": codebook.file,
        "codebook_sha256": codebook.sha256,
        "codebook_size": N_VISUAL_CODES,
        "backend": "pil",
    }


def _audio_config(codebook: Codebook) -> dict[str, Any]:
    return {
        "sampling_rate": 16000,
        "feature_size": _FEATURES,
        "n_fft": 400,
        "hop_length": 160,
        "win_length": 400,
        "window": "hann",
        "center": True,
        "pad_mode": "reflect",
        "fmin": 0.0,
        "fmax": 8000.0,
        "mel_scale": "slaney",
        "mel_norm": "slaney",
        "log_floor": 1e-10,
        "dynamic_range": 8.0,
        "log_offset": 4.0,
        "log_scale": 4.0,
        "padding_value": 0.0,
        "resampling": "fft",
        "mel_frames_per_code": 4,
        "n_q": _N_Q,
        "audio_codebook_size": N_AUDIO_CODES // _N_Q,
        "audio_codebook_file": codebook.file,
        "audio_codebook_sha256": codebook.sha256,
    }


def _processor_config(vocab: Mapping[str, int]) -> dict[str, Any]:
    tokens = {
        role: f"<|{role}|>"
        for role in (
            *("image_start", "image_end", "row_sep", "image", "video_start", "video_end"),
            *("audio_start", "audio_end", "script_start", "script_end", "ipa_start", "ipa_end"),
            *("action_start", "action_end"),
        )
    }
    templates = {
        "visual_code": "<|vq_{}|>",
        "audio_code": "<|audio_{}|>",
        "action_bin": "<|action_bin_{}|>",
        "timestamp": "<|t_{}|>",
        "camera": "<|camera:{}|>",
        "action": "<|act:{}|>",
        "ipa": "<|ipa_{}|>",
        "script": "<|blender:{}|>",
    }
    return {
        "image_token_mode": "vq",
        "add_bos_token": True,
        "padding_side": "right",
        "tokens": tokens,
        "token_templates": templates,
        "visual_token_offset": vocab[templates["visual_code"].format(0)],
        "audio_token_offset": vocab[templates["audio_code"].format(0)],
        "action_token_offset": vocab[templates["action_bin"].format(0)],
        "timestamp_token_offset": vocab[templates["timestamp"].format(0)],
        "n_timestamps": N_TIMESTAMPS,
        "cameras": _family("camera:"),
        "ipa_phones": _family("ipa_", exclude=(tokens["ipa_start"], tokens["ipa_end"])),
        "script_decimals": 3,
        "actions": {
            "n_bins": N_ACTION_BINS,
            "bin_range": [-1.0, 1.0],
            "normalization": "q01_q99",
            "norm_stats": REFERENCE_NORM_STATS,
        },
    }


def reference_processor(tokenizer: Any, *, seed: int) -> VLAProcessor:
    """The golden releases' processor around ``tokenizer`` (a transformers tokenizer of the reference package).

    Codebooks: visual from ``numpy.random.default_rng([seed, 0])``, audio from ``[seed, 1]``.

    Example:
        >>> tok = AutoTokenizer.from_pretrained("golden/dense/model")  # doctest: +SKIP
        >>> reference_processor(tok, seed=1).save_pretrained("out/")  # doctest: +SKIP
    """
    visual = Codebook.from_array(
        VISUAL_CODEBOOK_FILE,
        VISUAL_TENSOR,
        visual_codebook(
            [seed, 0],
            size=N_VISUAL_CODES,
            patch_size=_PATCH,
            mean=_IMAGENET_MEAN,
            std=_IMAGENET_STD,
        ),
        {"layout": "[code, channel * dy * dx] in normalised pixel space", "seed": f"[{seed}, 0]"},
    )
    audio = Codebook.from_array(
        AUDIO_CODEBOOK_FILE,
        AUDIO_TENSOR,
        audio_codebooks([seed, 1], n_q=_N_Q, size=N_AUDIO_CODES // _N_Q, dim=_FEATURES),
        {"layout": "[stage, code, mel] residual codebooks over log-mel means", "seed": f"[{seed}, 1]"},
    )
    image = _image_config(visual)
    video = {**image, "sample_fps": 2.0, "max_frames": 8, "temporal_patch_size": 2, "timestamp_interval": 1.0}
    return VLAProcessor(
        VLAImageProcessor(codebook=visual, **image),
        VLAVideoProcessor(codebook=visual, **video),
        VLAFeatureExtractor(codebook=audio, **_audio_config(audio)),
        tokenizer,
        **_processor_config(tokenizer.get_vocab()),
    )


def write_processor_files(processor: VLAProcessor, directory: Path) -> list[Path]:
    """Write the processor's files (not the tokenizer's) into ``directory``; same processor, same bytes."""
    paths = []
    for name, data in sorted(processor.processor_files().items()):
        path = Path(directory) / name
        path.write_bytes(data)
        paths.append(path)
    return paths


def norm_stats_mismatches(model_config: Mapping[str, Any], processor: VLAProcessor) -> list[str]:
    """Where ``config.json``'s ``norm_stats`` differs from the processor's (empty when they agree)."""
    mirrored = model_config.get("norm_stats")
    if mirrored is None:
        return ["config.json has no norm_stats"]
    ours = processor.vla.actions.to_json()["norm_stats"]
    problems = []
    for key in sorted(set(mirrored) | set(ours)):
        if key not in ours:
            problems.append(f"norm_stats.{key} is in config.json only")
        elif key not in mirrored:
            problems.append(f"norm_stats.{key} is in the processor only")
        elif mirrored[key] != ours[key]:
            problems.append(f"norm_stats.{key}: config.json {mirrored[key]}, processor {ours[key]}")
    return problems
