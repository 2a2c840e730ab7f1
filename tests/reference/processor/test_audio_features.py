"""Audio: the log-mel front end against independent implementations and hand values; codes at a fixed rate."""

import numpy as np
import pytest
import torch
from transformers import AutoFeatureExtractor
from transformers.audio_utils import mel_filter_bank

import vla_reference.processor as vp
from vla_reference.processor.audio import (
    hz_to_mel,
    log_mel,
    mel_filters,
    mel_to_hz,
    num_frames,
    power_spectrogram,
    resample,
    resampled_length,
)

pytest_plugins = ["processor_fixtures"]


def _sine(freq, n, rate):
    return np.sin(2 * np.pi * freq * np.arange(n) / rate)


@pytest.fixture(scope="module")
def cfg(golden_processor):
    # golden: 16 kHz, n_fft 400, hop 160, 16 slaney mels 0..8000 Hz, 4 mel frames per code, 2 x 16 codes
    return golden_processor.feature_extractor.audio


def test_mel_scale_hand_values():
    # slaney: 1000 Hz / (200/3 Hz per mel) = 15 mel; 6400 Hz = 15 + ln(6.4) / (ln(6.4) / 27) = 42 mel
    np.testing.assert_allclose(hz_to_mel([0.0, 500.0, 1000.0, 6400.0], "slaney"), [0.0, 7.5, 15.0, 42.0])
    np.testing.assert_allclose(hz_to_mel(700.0, "htk"), 2595 * np.log10(2))
    np.testing.assert_allclose(mel_to_hz(hz_to_mel([123.0, 4567.0], "slaney"), "slaney"), [123.0, 4567.0])


@pytest.mark.parametrize("scale, norm", [("slaney", "slaney"), ("htk", None)])
def test_mel_filters_match_transformers(cfg, scale, norm):
    from dataclasses import replace

    ours = mel_filters(replace(cfg, mel_scale=scale, mel_norm=norm))
    theirs = mel_filter_bank(
        num_frequency_bins=cfg.n_fft // 2 + 1,
        num_mel_filters=cfg.feature_size,
        min_frequency=cfg.fmin,
        max_frequency=cfg.fmax,
        sampling_rate=cfg.sampling_rate,
        norm=norm,
        mel_scale=scale,
    )
    np.testing.assert_allclose(ours, theirs.T, rtol=1e-10, atol=1e-12)


def test_power_spectrogram_matches_torch_stft(cfg):
    x = np.random.default_rng(0).normal(size=3000)
    window = torch.hann_window(cfg.n_fft, periodic=True, dtype=torch.float64)
    spec = torch.stft(
        torch.from_numpy(x),
        cfg.n_fft,
        cfg.hop_length,
        window=window,
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    np.testing.assert_allclose(power_spectrogram(x, cfg), spec.abs().numpy() ** 2, rtol=1e-9, atol=1e-9)


def test_frame_count(cfg):
    # centred: 1 + 8000 // 160 = 51 frames; codes: ceil(51 / 4) = 13
    assert num_frames(8000, cfg) == 51
    assert log_mel(np.zeros(8000), cfg).shape == (16, 51)


def test_a_sine_peaks_in_its_bin(cfg):
    # bins are 16000 / 400 = 40 Hz apart: 1000 Hz is bin 25
    spec = power_spectrogram(_sine(1000.0, 4000, 16000), cfg)
    assert (spec[:, 2:-2].argmax(axis=0) == 25).all()


def test_silence_is_the_floor(cfg):
    # log10(max(0, 1e-10)) = -10, kept by the dynamic range; (-10 + 4) / 4 = -1.5
    np.testing.assert_allclose(log_mel(np.zeros(1600), cfg), -1.5)


def test_dynamic_range_clamps_below_the_peak(cfg):
    feats = log_mel(_sine(440.0, 16000, 16000), cfg)
    # (L + 4) / 4 with L >= max(L) - 8: the features span at most 8 / 4 = 2
    assert feats.max() - feats.min() <= 2.0 + 1e-6


def test_resampling_lengths_and_identity():
    # round half up of n * target / source: 1000 * 16000 / 44100 = 362.8 -> 363
    assert resampled_length(1000, 44100, 16000) == 363
    assert resampled_length(48000, 48000, 16000) == 16000
    x = _sine(440.0, 1000, 16000)
    assert np.array_equal(resample(x, 16000, 16000), x)


@pytest.mark.parametrize("source", [8000, 44100, 48000])
def test_resampling_keeps_the_frequency(source):
    y = resample(_sine(440.0, source, source), source, 16000)  # one second
    assert len(y) == 16000
    assert np.abs(np.fft.rfft(y)).argmax() == 440  # 1 Hz per bin over one second
    np.testing.assert_allclose(y[1000:15000], _sine(440.0, 16000, 16000)[1000:15000], atol=2e-3)


def test_codes_have_the_codec_shape_and_are_stable(golden_processor):
    fe = golden_processor.feature_extractor
    clip = vp.Audio(_sine(440.0, 8000, 16000).astype(np.float32), sampling_rate=16000)
    a = fe([clip], return_codes=True, return_tensors="np")
    b = fe(clip, return_codes=True, return_tensors="np")
    assert a["audio_codes"].shape == (1, 2, 13)
    assert np.array_equal(a["audio_codes"], b["audio_codes"])
    assert a["audio_codes"].min() >= 0 and a["audio_codes"].max() < 16
    assert fe.decode(a["audio_codes"][0]).shape == (16, 13)


def test_audio_tokens_are_time_major(golden_processor):
    clip = vp.Audio(_sine(300.0, 3200, 16000), sampling_rate=16000)
    out = golden_processor([clip])
    codes = out["audio_codes"][0].numpy()  # [n_q, T]
    offset = golden_processor.audio_token_offset
    expected = [offset + q * 16 + int(codes[q, t]) for t in range(codes.shape[1]) for q in range(2)]
    assert out["input_ids"][0, 2:-1].tolist() == expected


def test_batch_padding_of_features_and_codes(golden_processor):
    out = golden_processor.feature_extractor(
        [vp.Audio(np.zeros(1600), sampling_rate=16000), vp.Audio(np.zeros(3200), sampling_rate=16000)],
        return_codes=True,
        return_tensors="np",
    )
    # 1 + 1600 // 160 = 11 and 21 frames; codes ceil(11 / 4) = 3 and ceil(21 / 4) = 6
    assert out["input_features"].shape == (2, 16, 21)
    assert out["feature_attention_mask"].sum(axis=1).tolist() == [11, 21]
    assert (out["audio_codes"][0, :, 3:] == -1).all() and (out["audio_codes"][1] >= 0).all()


def test_lists_arrays_and_tensors_agree(golden_processor):
    x = _sine(250.0, 2000, 16000)
    inputs = (x.tolist(), x, torch.from_numpy(x), tuple(x))
    outs = [golden_processor([vp.Audio(s, sampling_rate=16000)]) for s in inputs]
    for other in outs[1:]:
        assert all(np.array_equal(outs[0][k].numpy(), other[k].numpy()) for k in outs[0])


@pytest.mark.parametrize(
    "audio, message",
    [
        (
            vp.Audio(np.zeros(100, np.int16), sampling_rate=16000),
            "audio samples have dtype int16, expected float.*x / 32768",
        ),
        (vp.Audio(np.zeros((2, 1000)), sampling_rate=16000), r"audio samples have shape \(2, 1000\), expected mono"),
        (vp.Audio(np.zeros(1000), sampling_rate=None), "sampling_rate is missing; it is never guessed"),
        (vp.Audio(np.zeros(1000), sampling_rate=16000.0), "sampling_rate must be a positive integer"),
        (vp.Audio(np.zeros(100), sampling_rate=16000), "audio has 100 samples at 16000 Hz, the front end needs"),
        (vp.Audio(np.array([0.0, np.nan] * 300), sampling_rate=16000), "audio has 300 NaN or infinite samples"),
    ],
    ids=["int16", "stereo", "no-rate", "float-rate", "too-short", "nan"],
)
def test_invalid_audio_is_named(golden_processor, audio, message):
    with pytest.raises(vp.ItemError, match=rf"item 0 \(audio\): {message}"):
        golden_processor([audio])


def test_the_feature_extractor_loads_with_its_codebook(golden_model):
    fe = AutoFeatureExtractor.from_pretrained(golden_model)
    assert type(fe) is vp.VLAFeatureExtractor
    assert fe.codebook is not None and fe.codebook.sha256 == fe.audio_codebook_sha256
