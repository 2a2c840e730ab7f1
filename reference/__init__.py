"""Reference implementations behind pytest-vla; nothing here imports pytest.

Exported here: the converter's entry points (``merge``, ``reshard``, ``open_source``), which turn
a Megatron-sharded training checkpoint (TP/PP/EP, torch or torch_dist format, megatron-core /
Transformer Engine / legacy naming) into a Hugging Face checkpoint that stock transformers
classes load, and back, bit-exactly and one tensor at a time. Every capability is a subpackage
with its public surface in its ``__init__``: ``converter``, ``megatron``, ``hf``, ``parity``,
``tokenizer``, ``processor``, ``preprocessing``, ``card``, ``release``, ``repro``, ``golden``,
``cli`` (the module map in README.md).
"""

from ._convert import merge, open_source, reshard, tokenizer_vocab_size
from ._fs import atomic_write_bytes, inside, read_json
from .converter._families import FAMILIES, family_for_arch
from .converter._model import Arch, Layout, padded_vocab_size
from .converter._split_rules import RULES, canonical_keys
from .errors import (
    LayoutError,
    MalformedFileError,
    ReleaseError,
    ShardMismatchError,
    UnsafeCheckpointError,
    UnsupportedModelError,
)
from .hf._checkpoint import HFSource, write_hf
from .megatron._args import arch_from_args
from .megatron._legacy import MegatronSource
from .megatron._rank_writer import write_megatron

__all__ = [
    "atomic_write_bytes",
    "inside",
    "read_json",
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
