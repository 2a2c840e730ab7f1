"""Megatron checkpoints: finding them on disk, the legacy and torch_dist readers, the rank-file
and torch_dist writers, the safe unpicklers.
"""

from ._args import HYPERPARAMETER_ARGS, arch_from_args, args_disagreements, args_record, layout_from_args
from ._checkpoint_dir import CheckpointDir, find_checkpoint
from ._dcp_metadata import read_dcp_metadata
from ._legacy import MegatronSource
from ._quickload import QuickLoadRefused, quick_load
from ._rank_writer import check_layout, write_megatron
from ._safeload import Opaque, load_pt, load_pt_mapped
from ._torch_dist import TorchDistSource
from ._torch_dist_writer import write_torch_dist

__all__ = [
    "arch_from_args",
    "layout_from_args",
    "HYPERPARAMETER_ARGS",
    "args_disagreements",
    "args_record",
    "CheckpointDir",
    "find_checkpoint",
    "MegatronSource",
    "QuickLoadRefused",
    "quick_load",
    "check_layout",
    "write_megatron",
    "Opaque",
    "load_pt",
    "load_pt_mapped",
    "TorchDistSource",
    "read_dcp_metadata",
    "write_torch_dist",
]
