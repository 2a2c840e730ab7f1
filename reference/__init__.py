"""Reference implementations behind pytest-vla; nothing here imports pytest.

The converter (exported here) turns a Megatron-sharded training checkpoint (TP/PP/EP, torch or
torch_dist format, megatron-core / Transformer Engine / legacy naming) into a Hugging Face
checkpoint that stock transformers classes load, and back, bit-exactly and one tensor at a time.
The other parts are subpackages and modules: ``parallel`` (sharded forward on torch.distributed),
``processor`` (the reference VLAProcessor), ``tokenizer``, ``manifest``, ``card``, ``semver``,
``repro``, ``golden`` (the golden-release builder).
"""

from .arch import Arch, Layout, arch_from_args, padded_vocab_size
from .convert import merge, open_source, reshard, tokenizer_vocab_size
from .errors import (
    LayoutError,
    MalformedFileError,
    ReleaseError,
    ShardMismatchError,
    UnsafeCheckpointError,
    UnsupportedModelError,
)
from .families import FAMILIES, family_for_arch
from .hf import HFSource, write_hf
from .megatron import MegatronSource
from .shard_writer import write_megatron
from .spec import RULES, canonical_keys

__all__ = [
    "Arch",
    "Layout",
    "arch_from_args",
    "padded_vocab_size",
    "merge",
    "reshard",
    "open_source",
    "tokenizer_vocab_size",
    "ReleaseError",
    "LayoutError",
    "MalformedFileError",
    "ShardMismatchError",
    "UnsafeCheckpointError",
    "UnsupportedModelError",
    "FAMILIES",
    "family_for_arch",
    "HFSource",
    "MegatronSource",
    "write_hf",
    "write_megatron",
    "RULES",
    "canonical_keys",
]
