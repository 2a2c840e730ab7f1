"""Hugging Face checkpoints: the safetensors reader and writer, the HF directory as a converter source."""

from ._checkpoint import HFSource, write_hf
from ._safetensors import SafetensorsFile
from ._streamed import float32_bytes, streamed_model

__all__ = [
    "HFSource",
    "write_hf",
    "SafetensorsFile",
    "float32_bytes",
    "streamed_model",
]
