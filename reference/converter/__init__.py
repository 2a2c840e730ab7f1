"""The converter's format-neutral core: the model description (Arch, Layout), the split-rule
table, row blocks, tensor transforms, the Hugging Face families, merge and reshard.
"""

from ._families import (
    CONFIG_KEYS,
    FAMILIES,
    Family,
    arch_from_config,
    compare_config,
    family_for_arch,
    family_for_config,
)
from ._model import Arch, Layout, padded_vocab_size
from ._pages import FileMappings
from ._params import Params
from ._pwrite import WRITE_BYTES, Writer
from ._rows import CHUNK_BYTES, HCat, Rows
from ._sourcebase import InFileMappings
from ._split_rules import ALIASES, RULES, Split, canonical_keys, expected_shape, match_local, rule_for, rules_markdown
from ._synthetic import DictSource, gaussian, random_weights
from ._tp import merge_tp, rank_ranges, split_tp

__all__ = [
    "CONFIG_KEYS",
    "FAMILIES",
    "Family",
    "arch_from_config",
    "compare_config",
    "family_for_arch",
    "family_for_config",
    "Arch",
    "Layout",
    "Params",
    "padded_vocab_size",
    "FileMappings",
    "WRITE_BYTES",
    "Writer",
    "CHUNK_BYTES",
    "HCat",
    "Rows",
    "InFileMappings",
    "ALIASES",
    "RULES",
    "Split",
    "canonical_keys",
    "expected_shape",
    "match_local",
    "rule_for",
    "rules_markdown",
    "DictSource",
    "gaussian",
    "random_weights",
    "merge_tp",
    "rank_ranges",
    "split_tp",
]
