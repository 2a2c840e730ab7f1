"""The config records: round trips, and every bad value reported by key, all at once."""

import json

import pytest

import vla_reference.processor as vp
from vla_reference.errors import ReleaseError
from vla_reference.processor.media_config import FILTERS

pytest_plugins = ["processor_fixtures"]


def test_image_config_round_trips(golden_image_config):
    cfg = vp.ImageConfig.from_json(golden_image_config)
    assert cfg.to_json() == golden_image_config
    assert vp.ImageConfig.from_json(cfg.to_json()) == cfg


def test_every_section_of_the_golden_config_round_trips(golden_config):
    video = {k: v for k, v in golden_config["video_processor"].items() if k != "video_processor_type"}
    audio = {k: v for k, v in golden_config["feature_extractor"].items() if k != "feature_extractor_type"}
    assert vp.VideoConfig.from_json(video).to_json() == video
    assert vp.AudioConfig.from_json(audio).to_json() == audio
    top = {
        k: v for k, v in golden_config.items() if k not in ("image_processor", "video_processor", "feature_extractor")
    }
    top.pop("processor_class")
    assert vp.ProcessorConfig.from_json(top).to_json() == top


def test_missing_keys_are_all_named_together():
    with pytest.raises(vp.ProcessorConfigError, match=r"image_processor.size.height is missing.*image_mean is missing"):
        vp.ImageConfig.from_json({})


def test_config_errors_are_release_errors_with_a_fix():
    with pytest.raises(ReleaseError) as e:
        vp.ImageConfig.from_json({})
    assert e.value.fix and "docs/processor.md" in e.value.fix


def test_a_misspelled_key_is_reported(golden_image_config):
    golden_image_config["image_meen"] = golden_image_config.pop("image_mean")
    with pytest.raises(vp.ProcessorConfigError, match=r"image_mean is missing; .*image_meen is not a known key"):
        vp.ImageConfig.from_json(golden_image_config)


def test_antialias_must_say_what_pil_does(golden_image_config):
    golden_image_config["antialias"] = False
    with pytest.raises(vp.ProcessorConfigError, match=r"antialias is False but PIL's bicubic filter always.*2950"):
        vp.ImageConfig.from_json(golden_image_config)


def test_nearest_never_antialiases(golden_image_config):
    golden_image_config["resample"] = 0
    with pytest.raises(
        vp.ProcessorConfigError, match=r"nearest filter never antialiases \(pytorch/vision#2950\); set it to False"
    ):
        vp.ImageConfig.from_json(golden_image_config)
    golden_image_config["antialias"] = False
    assert vp.ImageConfig.from_json(golden_image_config).filter.name == "nearest"


@pytest.mark.parametrize("name", ["/abs/book.safetensors", "../book.safetensors", "a\\b.safetensors"])
def test_codebook_files_stay_inside_the_model_directory(golden_image_config, name):
    golden_image_config["codebook_file"] = name
    with pytest.raises(vp.ProcessorConfigError, match="codebook_file must be a relative file name inside the model"):
        vp.ImageConfig.from_json(golden_image_config)


def test_filter_table_matches_pil():
    from PIL import Image

    assert {f.name: f.pil for f in FILTERS} == {r.name.lower(): int(r) for r in Image.Resampling}


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("image_std", [0.229, 0.0, 0.225], r"image_std\[1\] must be > 0"),
        ("size", {"height": 30, "width": 32}, "size.height 30 is not a multiple of patch_size 8"),
        ("fit", "squash", r"fit must be one of \['pad', 'crop', 'stretch'\], found 'squash'"),
        ("pad_color", [0, 0, 256], r"pad_color\[2\] must be <= 255"),
        ("resample", 9, "resample must be a PIL filter"),
        ("do_normalize", "yes", "do_normalize must be true or false"),
        ("backend", "torchvision", r"backend must be one of \['pil'\]"),
    ],
    ids=["std-zero", "size-not-patch-multiple", "unknown-fit", "pad-colour-range", "unknown-filter", "bool", "backend"],
)
def test_bad_image_values_are_named(golden_image_config, key, value, message):
    golden_image_config[key] = value
    with pytest.raises(vp.ProcessorConfigError, match=message):
        vp.ImageConfig.from_json(golden_image_config)


def test_video_needs_whole_tubelets(golden_config):
    video = {k: v for k, v in golden_config["video_processor"].items() if k != "video_processor_type"}
    video["max_frames"] = 7
    with pytest.raises(vp.ProcessorConfigError, match="max_frames 7 is not a multiple of temporal_patch_size 2"):
        vp.VideoConfig.from_json(video)


def test_audio_band_must_fit_nyquist(golden_config):
    audio = {k: v for k, v in golden_config["feature_extractor"].items() if k != "feature_extractor_type"}
    audio["fmax"] = 9000.0
    with pytest.raises(vp.ProcessorConfigError, match="fmax needs 0 <= fmin < fmax <= sampling_rate / 2"):
        vp.AudioConfig.from_json(audio)


def _actions(golden_config):
    return json.loads(json.dumps(golden_config["actions"]))


def test_degenerate_quantiles_are_rejected(golden_config):
    actions = _actions(golden_config)
    actions["norm_stats"]["nuplan"]["q99"][1] = actions["norm_stats"]["nuplan"]["q01"][1]
    with pytest.raises(vp.ProcessorConfigError, match=r"norm_stats.nuplan.q99\[1\] must exceed q01\[1\]"):
        vp.ActionConfig.from_json(actions)


def test_stats_need_what_the_normalization_uses(golden_config):
    actions = _actions(golden_config)
    actions["normalization"] = "mean_std"
    del actions["norm_stats"]["waymo_open"]["std"]
    with pytest.raises(
        vp.ProcessorConfigError, match=r"norm_stats.waymo_open.std is missing; normalization 'mean_std'"
    ):
        vp.ActionConfig.from_json(actions)


def test_stats_lengths_must_match_the_mask(golden_config):
    actions = _actions(golden_config)
    actions["norm_stats"]["nuplan"]["q01"] = [0.0]
    with pytest.raises(vp.ProcessorConfigError, match=r"norm_stats.nuplan.q01 must be a list of 3 numbers"):
        vp.ActionConfig.from_json(actions)


def test_templates_need_one_slot(golden_config):
    top = {
        k: v for k, v in golden_config.items() if k not in ("image_processor", "video_processor", "feature_extractor")
    }
    top["token_templates"] = {**top["token_templates"], "camera": "<|camera|>"}
    with pytest.raises(vp.ProcessorConfigError, match=r"token_templates.camera must contain exactly one '\{\}'"):
        vp.ProcessorConfig.from_json(top)
