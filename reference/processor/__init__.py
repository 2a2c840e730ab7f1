"""The reference VLAProcessor: a transformers-native processor with deterministic tokens for every modality.

Importing this package registers the classes with ``AutoConfig``, ``AutoImageProcessor``,
``AutoVideoProcessor``, ``AutoFeatureExtractor`` and ``AutoProcessor``; then
``AutoProcessor.from_pretrained(release / "model")`` returns a :class:`VLAProcessor`.

Example:
    >>> import vla_reference.processor as vp
    >>> processor = AutoProcessor.from_pretrained("golden/dense/model")  # doctest: +SKIP
    >>> batch = processor(["Turn left here:", vp.Action.TURN_LEFT])  # doctest: +SKIP

See docs/processor.md for the config keys, the token layout and every formula.
"""

from .actions import Action, ActionVector
from .audio import VLAFeatureExtractor
from .auto import VLAConfig, register_auto_classes
from .build import REFERENCE_NORM_STATS, norm_stats_mismatches, reference_processor, write_processor_files
from .codebook import Codebook
from .config import LEGACY_PREPROCESSOR_CONFIG, LEGACY_VIDEO_CONFIG, PROCESSOR_CONFIG, ActionConfig, ProcessorConfig
from .errors import ActionDecodeError, CodebookError, ItemError, ProcessorConfigError, ScriptSyntaxError
from .image import VLAImageProcessor
from .items import IPA, Audio, Script3D, Video
from .media_config import AudioConfig, ImageConfig, VideoConfig
from .processor import VLAProcessor
from .tokens import MODALITIES
from .video import VLAVideoProcessor

__all__ = [
    "VLAProcessor",
    "VLAImageProcessor",
    "VLAVideoProcessor",
    "VLAFeatureExtractor",
    "VLAConfig",
    "register_auto_classes",
    "Action",
    "ActionVector",
    "Video",
    "Audio",
    "Script3D",
    "IPA",
    "Codebook",
    "ImageConfig",
    "VideoConfig",
    "AudioConfig",
    "ActionConfig",
    "ProcessorConfig",
    "MODALITIES",
    "PROCESSOR_CONFIG",
    "LEGACY_PREPROCESSOR_CONFIG",
    "LEGACY_VIDEO_CONFIG",
    "REFERENCE_NORM_STATS",
    "reference_processor",
    "write_processor_files",
    "norm_stats_mismatches",
    "ProcessorConfigError",
    "CodebookError",
    "ItemError",
    "ScriptSyntaxError",
    "ActionDecodeError",
]

register_auto_classes()
