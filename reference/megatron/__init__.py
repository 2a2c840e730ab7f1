"""Megatron checkpoints: finding them on disk, the legacy and torch_dist readers, the rank-file
and torch_dist writers, the safe unpicklers.
"""

from ._checkpoint_dir import CheckpointDir, find_checkpoint
from ._legacy import MegatronSource
from ._quickload import QuickLoadRefused, quick_load
from ._rank_writer import check_layout, write_megatron
from ._safeload import Opaque, load_pt, load_pt_mapped
from ._torch_dist import TorchDistSource, read_dcp_metadata
from ._torch_dist_writer import write_torch_dist

__all__ = [
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
