"""Registration with transformers' Auto* factories, so ``AutoProcessor.from_pretrained(model_dir)`` finds us.

The image and video processors are registered under every backend name transformers may ask for
("pil" and "torchvision"): whichever it picks, it gets the PIL-pinned class, never a silent swap
to another backend (which replaces LANCZOS by BICUBIC in some cases).
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, AutoFeatureExtractor, AutoImageProcessor, AutoProcessor, PreTrainedConfig

# the top-level AutoVideoProcessor is a torchvision-only placeholder; the module's class works without it
from transformers.models.auto.video_processing_auto import AutoVideoProcessor

from .audio import VLAFeatureExtractor
from .image import VLAImageProcessor
from .processor import VLAProcessor
from .video import VLAVideoProcessor

__all__ = ["VLAConfig", "register_auto_classes"]


class VLAConfig(PreTrainedConfig):
    """The key under which the processor classes are registered (``model_type`` ``"vla"``).

    The released model keeps its stock config (e.g. Llama); ``AutoProcessor`` finds
    ``VLAProcessor`` by the ``processor_class`` in ``processor_config.json``.
    """

    model_type = "vla"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)


def register_auto_classes() -> None:
    """Register the config and the four processor classes (idempotent; run on import of the package)."""
    AutoConfig.register(VLAConfig.model_type, VLAConfig, exist_ok=True)
    pinned: dict[str, type] = {"pil": VLAImageProcessor, "torchvision": VLAImageProcessor}
    AutoImageProcessor.register(VLAConfig, image_processor_classes=pinned, exist_ok=True)
    videos: dict[str, type] = {"pil": VLAVideoProcessor, "torchvision": VLAVideoProcessor}
    AutoVideoProcessor.register(VLAConfig, video_processor_classes=videos, exist_ok=True)
    AutoFeatureExtractor.register(VLAConfig, VLAFeatureExtractor, exist_ok=True)
    AutoProcessor.register(VLAConfig, VLAProcessor, exist_ok=True)
