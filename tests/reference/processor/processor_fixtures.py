"""Fixtures for the processor's unit tests, loaded by ``pytest_plugins = ["processor_fixtures"]``.

A plugin module, not a conftest.py: a second conftest module would shadow ``tests/conftest.py``
for the suite's ``from conftest import GOLDEN``. Names start with ``golden_``: plugin fixtures are
visible to the whole session.
"""

import json
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoProcessor

import vla_reference.processor as vp

GOLDEN_MODEL = Path(__file__).resolve().parents[3] / "golden" / "dense" / "model"


@pytest.fixture(scope="session")
def golden_model() -> Path:
    """``golden/dense/model``: the shipped processor files (read only)."""
    return GOLDEN_MODEL


@pytest.fixture(scope="session")
def golden_processor() -> vp.VLAProcessor:
    """The golden release's processor, loaded the way a user loads it."""
    return AutoProcessor.from_pretrained(GOLDEN_MODEL)


@pytest.fixture(scope="session")
def golden_config() -> dict[str, Any]:
    """The golden processor_config.json, parsed."""
    return json.loads((GOLDEN_MODEL / vp.PROCESSOR_CONFIG).read_text())


@pytest.fixture
def golden_image_config(golden_config) -> dict[str, Any]:
    """A fresh copy of the golden image processor's keys, to edit in a test."""
    cfg = json.loads(json.dumps(golden_config["image_processor"]))
    cfg.pop("image_processor_type")
    return cfg


def _image_config(**overrides: Any) -> vp.ImageConfig:
    """An image config written out in full: 32x32, patch 8, ImageNet mean/std, bicubic, no codebook."""
    cfg: dict[str, Any] = {
        "size": {"height": 32, "width": 32},
        "resample": 3,
        "antialias": True,
        "fit": "pad",
        "pad_color": [124, 116, 104],
        "do_convert_rgb": True,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
        "patch_size": 8,
        "codebook_file": None,
        "codebook_sha256": None,
        "codebook_size": 64,
        "backend": "pil",
    }
    cfg.update(overrides)
    return vp.ImageConfig.from_json(cfg)


@pytest.fixture
def make_image_config():
    """``make_image_config(fit="crop", ...)``: a full image config with some keys replaced."""
    return _image_config


@pytest.fixture
def golden_processor_kwargs(golden_config) -> dict[str, Any]:
    """The golden processor-level keys (no sub-processors), a fresh copy to edit."""
    parts = ("image_processor", "video_processor", "feature_extractor", "processor_class")
    return json.loads(json.dumps({k: v for k, v in golden_config.items() if k not in parts}))


@pytest.fixture
def rebuild_processor(golden_processor, golden_processor_kwargs):
    """``rebuild_processor(padding_side="left")``: the golden processor with some processor-level keys replaced."""

    def build(**overrides: Any) -> vp.VLAProcessor:
        parts = (
            golden_processor.image_processor,
            golden_processor.video_processor,
            golden_processor.feature_extractor,
            golden_processor.tokenizer,
        )
        return vp.VLAProcessor(*parts, **{**golden_processor_kwargs, **overrides})

    return build
