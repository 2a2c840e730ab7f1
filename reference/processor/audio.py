"""Audio: resampling, a Whisper-style log-mel front end and residual codebook codes, all in numpy.

For mono float samples ``x`` at ``sr`` Hz and the config's keys:

- **Resampling** (``resampling: "fft"``), when ``sr != sampling_rate``: ``scipy.signal.resample``'s
  algorithm. ``M = round_half_up(N * sampling_rate / sr)`` output samples; the rfft of ``x`` is
  truncated or zero-padded to ``M // 2 + 1`` bins (an even-length band edge is doubled when
  downsampling, halved when upsampling), then ``irfft(.., M) * M / N``.
- **STFT**: pad ``n_fft // 2`` on both sides (``center``, ``pad_mode``), frames of ``n_fft`` every
  ``hop_length`` samples (``1 + len // hop_length`` frames when centred), periodic Hann window
  ``w[n] = 0.5 - 0.5 cos(2 pi n / n_fft)``, power ``|rfft|^2``.
- **Mel filters**: ``feature_size`` triangles between ``fmin`` and ``fmax``, equally spaced on the
  ``mel_scale`` (``slaney``: linear below 1 kHz at 200/3 Hz per mel, logarithmic above with
  step ln(6.4)/27; ``htk``: 2595 log10(1 + f/700)), ``mel_norm: "slaney"`` scales each by
  2 / (its width in Hz) - librosa's and Whisper's filters.
- **Log**: ``L = log10(max(mel, log_floor))``; ``L = max(L, L.max() - dynamic_range)``;
  features ``(L + log_offset) / log_scale``, float32 ``[feature_size, frames]``.
- **Codes**: the mean of every ``mel_frames_per_code`` consecutive frames (the last window may be
  shorter) is quantised by the residual codebooks ``[n_q, K, feature_size]``: codes ``[n_q, T]``,
  ``T = ceil(frames / mel_frames_per_code)``, a fixed rate of sampling_rate / (hop_length *
  mel_frames_per_code) Hz. Code ``c`` of stage ``q`` is token ``audio_token_offset + q * K + c``.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature

from .codebook import AUDIO_TENSOR, Codebook, residual_decode, residual_quantize
from .config import own_keys
from .errors import CodebookError, ItemError
from .hub import CodebookLoader, hub_kwargs, resolve_file
from .items import Audio
from .media_config import AudioConfig

__all__ = [
    "as_mono",
    "resampled_length",
    "resample",
    "hz_to_mel",
    "mel_to_hz",
    "mel_filters",
    "power_spectrogram",
    "log_mel",
    "num_frames",
    "code_vectors",
    "AudioFeatures",
    "load_audio_codebook",
    "VLAFeatureExtractor",
]

_F_SP: Final = 200.0 / 3  # slaney: Hz per mel below 1 kHz
_LOG_STEP: Final = math.log(6.4) / 27.0  # slaney: mels per log-Hz above 1 kHz
_BREAK_HZ: Final = 1000.0


def as_mono(samples: Any) -> np.ndarray:
    """Float64 mono samples ``[N]`` from an array, tensor or list of floats.

    Raises:
        ItemError: not float, not 1-D, empty or not finite.
    """
    if isinstance(samples, torch.Tensor):
        samples = samples.detach().cpu().numpy()
    x = np.asarray(samples)
    if not np.issubdtype(x.dtype, np.floating):
        raise ItemError(
            f"audio samples have dtype {x.dtype}, expected float in [-1, 1]",
            fix="convert PCM to float (int16: x / 32768)",
        )
    if x.ndim != 1:
        raise ItemError(
            f"audio samples have shape {tuple(x.shape)}, expected mono [num_samples]",
            fix="pick a channel or average the channels (x.mean(axis=0) for [channels, samples])",
        )
    if len(x) == 0:
        raise ItemError("audio has no samples", fix="drop the empty clip")
    if not np.isfinite(x).all():
        raise ItemError(f"audio has {int((~np.isfinite(x)).sum())} NaN or infinite samples", fix="clean the clip")
    return x.astype(np.float64)


def _check_rate(rate: Any) -> int:
    if rate is None:
        raise ItemError("sampling_rate is missing; it is never guessed", fix="pass Audio(samples, sampling_rate=...)")
    if isinstance(rate, bool) or not isinstance(rate, numbers.Integral) or rate <= 0:
        raise ItemError(f"sampling_rate must be a positive integer, found {rate!r}", fix="pass the clip's rate in Hz")
    return int(rate)


def resampled_length(n: int, orig_sr: int, target_sr: int) -> int:
    """Samples after resampling ``n`` samples: ``round_half_up(n * target_sr / orig_sr)``.

    >>> resampled_length(1000, 44100, 16000)
    363
    """
    return n if orig_sr == target_sr else max(1, (2 * n * target_sr + orig_sr) // (2 * orig_sr))


def resample(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """FFT resampling (``scipy.signal.resample``'s algorithm) to ``target_sr``; float64."""
    if orig_sr == target_sr:
        return np.asarray(x, dtype=np.float64)
    n = len(x)
    m = resampled_length(n, orig_sr, target_sr)
    spectrum = np.fft.rfft(x)
    out = np.zeros(m // 2 + 1, dtype=np.complex128)
    keep = min(m, n)
    out[: keep // 2 + 1] = spectrum[: keep // 2 + 1]
    if keep % 2 == 0:  # the band edge +keep/2 is shared with -keep/2 in the smaller spectrum
        out[keep // 2] *= 2.0 if m < n else 0.5
    return np.fft.irfft(out, n=m) * (m / n)


def hz_to_mel(hz: np.ndarray | float, scale: str) -> np.ndarray:
    """Hertz to mels on the ``slaney`` or ``htk`` scale (module docstring)."""
    f = np.asarray(hz, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + f / 700.0)
    linear = f / _F_SP
    log = _BREAK_HZ / _F_SP + np.log(np.maximum(f, _BREAK_HZ) / _BREAK_HZ) / _LOG_STEP
    return np.where(f >= _BREAK_HZ, log, linear)


def mel_to_hz(mel: np.ndarray | float, scale: str) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    m = np.asarray(mel, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    brk = _BREAK_HZ / _F_SP
    return np.where(m >= brk, _BREAK_HZ * np.exp(_LOG_STEP * (m - brk)), _F_SP * m)


def mel_filters(cfg: AudioConfig) -> np.ndarray:
    """Triangular mel filters ``[feature_size, n_fft // 2 + 1]`` (librosa's construction)."""
    freqs = np.arange(cfg.n_fft // 2 + 1, dtype=np.float64) * cfg.sampling_rate / cfg.n_fft
    low, high = hz_to_mel(cfg.fmin, cfg.mel_scale), hz_to_mel(cfg.fmax, cfg.mel_scale)
    edges = mel_to_hz(np.linspace(low, high, cfg.feature_size + 2), cfg.mel_scale)
    widths = np.diff(edges)
    ramps = edges[:, None] - freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    if cfg.mel_norm == "slaney":
        weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights


def num_frames(n: int, cfg: AudioConfig) -> int:
    """STFT frames of ``n`` samples (after resampling)."""
    padded = n + 2 * (cfg.n_fft // 2) if cfg.center else n
    return 1 + (padded - cfg.n_fft) // cfg.hop_length


def _min_samples(cfg: AudioConfig) -> int:
    if cfg.center:
        return cfg.n_fft // 2 + 1 if cfg.pad_mode == "reflect" else 1
    return cfg.n_fft


def power_spectrogram(x: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """``|STFT|^2`` ``[n_fft // 2 + 1, frames]`` with a periodic Hann window; float64."""
    if len(x) < _min_samples(cfg):
        raise ItemError(
            f"audio has {len(x)} samples at {cfg.sampling_rate} Hz, the front end needs at least {_min_samples(cfg)}",
            fix="pass a longer clip",
        )
    if cfg.center:
        x = np.pad(x, cfg.n_fft // 2, mode=cfg.pad_mode)  # type: ignore[call-overload]
    frames = 1 + (len(x) - cfg.n_fft) // cfg.hop_length
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(cfg.n_fft) / cfg.n_fft)
    index = np.arange(cfg.n_fft)[None, :] + cfg.hop_length * np.arange(frames)[:, None]
    spectrum = np.fft.rfft(x[index] * window, axis=1)
    return (spectrum.real**2 + spectrum.imag**2).T


def log_mel(x: np.ndarray, cfg: AudioConfig, filters: np.ndarray | None = None) -> np.ndarray:
    """Log-mel features ``[feature_size, frames]`` (float32) of samples already at ``sampling_rate``."""
    fb = mel_filters(cfg) if filters is None else filters
    log_spec = np.log10(np.maximum(fb @ power_spectrogram(x, cfg), cfg.log_floor))
    log_spec = np.maximum(log_spec, log_spec.max() - cfg.dynamic_range)
    return ((log_spec + cfg.log_offset) / cfg.log_scale).astype(np.float32)


def code_vectors(features: np.ndarray, frames_per_code: int) -> np.ndarray:
    """``[T, feature_size]`` float64: the mean of each window of ``frames_per_code`` frames."""
    f = np.asarray(features, dtype=np.float32).astype(np.float64)
    return np.stack([f[:, t : t + frames_per_code].mean(axis=1) for t in range(0, f.shape[1], frames_per_code)])


def load_audio_codebook(cfg: AudioConfig, path: Path) -> Codebook:
    """The residual audio codebooks at ``path``, checked against the config's SHA-256 and sizes."""
    return Codebook.load(
        path,
        file=cfg.audio_codebook_file,
        tensor=AUDIO_TENSOR,
        sha256=cfg.audio_codebook_sha256,
        shape=(cfg.n_q, cfg.audio_codebook_size, cfg.feature_size),
    )


@dataclass(frozen=True)
class AudioFeatures:
    """One clip processed: log-mel ``[feature_size, frames]`` and codes ``[n_q, T]``."""

    features: np.ndarray
    codes: np.ndarray | None


class VLAFeatureExtractor(CodebookLoader, SequenceFeatureExtractor):
    """The reference audio feature extractor: log-mel features and residual codebook codes; no defaults.

    Example:
        >>> fe = AutoFeatureExtractor.from_pretrained("release/model")  # doctest: +SKIP
        >>> fe([Audio(np.zeros(16000), sampling_rate=16000)])["input_features"].shape  # doctest: +SKIP
        torch.Size([1, 16, 101])
    """

    model_input_names = ["input_features", "feature_attention_mask"]

    def __init__(self, codebook: Codebook | None = None, **kwargs: Any) -> None:
        kwargs = own_keys(kwargs, "feature_extractor_type")
        kwargs.pop("feature_extractor_type", None)
        self.audio = AudioConfig.from_json(kwargs)
        cfg = self.audio
        super().__init__(
            feature_size=cfg.feature_size, sampling_rate=cfg.sampling_rate, padding_value=cfg.padding_value
        )
        for key, value in cfg.to_json().items():
            setattr(self, key, value)
        self._filters = mel_filters(cfg)
        if codebook is not None:
            expected = (cfg.n_q, cfg.audio_codebook_size, cfg.feature_size)
            if codebook.sha256 != cfg.audio_codebook_sha256 or tuple(codebook.vectors.shape) != expected:
                raise CodebookError(
                    f"codebook {codebook.sha256} {tuple(codebook.vectors.shape)}, the config pins "
                    f"{cfg.audio_codebook_sha256} {expected}",
                    path=codebook.file,
                    key="audio_codebook_sha256",
                    fix="pass the codebook the config names",
                )
        self.codebook = codebook

    def _load_codebook_from(self, pretrained: str | os.PathLike[str], kwargs: dict[str, Any]) -> None:
        """Load the residual codebook the config names (called by ``from_pretrained``)."""
        path = resolve_file(pretrained, self.audio.audio_codebook_file, hub_kwargs(kwargs))
        self.codebook = load_audio_codebook(self.audio, path)

    def to_dict(self) -> dict[str, Any]:
        return {**self.audio.to_json(), "feature_extractor_type": type(self).__name__}

    def _books(self) -> np.ndarray:
        if self.codebook is None:
            raise CodebookError(
                "no audio codebook is loaded",
                key="audio_codebook_file",
                fix="load with from_pretrained (it reads audio_codebook_file) or pass codebook=",
            )
        return self.codebook.vectors

    def samples(self, audio: Audio) -> np.ndarray:
        """The clip's samples at the config's sampling rate (resampled if needed); float64."""
        if not isinstance(audio, Audio):
            raise ItemError(
                f"{type(audio).__name__} is not an Audio", fix="wrap samples in Audio(samples, sampling_rate=)"
            )
        rate = _check_rate(audio.sampling_rate)
        return resample(as_mono(audio.samples), rate, self.audio.sampling_rate)

    def num_codes(self, num_samples: int, sampling_rate: int) -> int:
        """Code frames ``T`` of a clip of ``num_samples`` at ``sampling_rate`` (before running it)."""
        n = resampled_length(num_samples, sampling_rate, self.audio.sampling_rate)
        return math.ceil(num_frames(n, self.audio) / self.audio.mel_frames_per_code)

    def process_one(self, audio: Audio, *, return_codes: bool) -> AudioFeatures:
        """Log-mel features and, with ``return_codes``, codes ``[n_q, T]`` of one clip.

        Raises:
            ItemError: not an Audio, rate missing, samples not mono float, or too short.
        """
        features = log_mel(self.samples(audio), self.audio, self._filters)
        codes = None
        if return_codes:
            codes = residual_quantize(code_vectors(features, self.audio.mel_frames_per_code), self._books())
        return AudioFeatures(features, codes)

    def decode(self, codes: np.ndarray | torch.Tensor) -> np.ndarray:
        """Feature-space vectors ``[feature_size, T]`` from codes ``[n_q, T]`` (lossy)."""
        c = codes.numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
        k = self.audio.audio_codebook_size
        if c.ndim != 2 or c.shape[0] != self.audio.n_q or c.min(initial=0) < 0 or c.max(initial=0) >= k:
            raise ItemError(
                f"codes must be [n_q={self.audio.n_q}, T] with entries in [0, {k}), found shape {c.shape}",
                fix="pass the audio_codes the processor returned (without padding)",
            )
        return residual_decode(c, self._books()).T.astype(np.float32)

    def __call__(  # type: ignore[override]
        self, audio: Any, *, return_codes: bool = False, return_tensors: str | None = None
    ) -> BatchFeature:
        """``input_features`` ``[N, feature_size, F]`` padded with ``padding_value``, ``feature_attention_mask``
        ``[N, F]`` and, with ``return_codes``, ``audio_codes`` ``[N, n_q, T]`` padded with -1.
        """
        batch = list(audio) if isinstance(audio, (list, tuple)) else [audio]
        feats = []
        for i, clip in enumerate(batch):
            try:
                feats.append(self.process_one(clip, return_codes=return_codes))
            except ItemError as e:
                raise e.located(batch=None, index=i, kind="audio") from e
        return BatchFeature(self.collate(feats, return_codes=return_codes), tensor_type=return_tensors)

    def collate(self, feats: Sequence[AudioFeatures], *, return_codes: bool) -> dict[str, np.ndarray]:
        """Pad features (right, ``padding_value``) and codes (right, -1) to the longest clip."""
        cfg = self.audio
        width = max((f.features.shape[1] for f in feats), default=0)
        features = np.full((len(feats), cfg.feature_size, width), cfg.padding_value, dtype=np.float32)
        mask = np.zeros((len(feats), width), dtype=np.int64)
        for i, f in enumerate(feats):
            features[i, :, : f.features.shape[1]] = f.features
            mask[i, : f.features.shape[1]] = 1
        data = {"input_features": features, "feature_attention_mask": mask}
        if return_codes:
            length = max((f.codes.shape[1] for f in feats if f.codes is not None), default=0)
            codes = np.full((len(feats), cfg.n_q, length), -1, dtype=np.int64)
            for i, f in enumerate(feats):
                if f.codes is not None:
                    codes[i, :, : f.codes.shape[1]] = f.codes
            data["audio_codes"] = codes
        return data
