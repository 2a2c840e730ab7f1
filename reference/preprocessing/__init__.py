"""Preprocessing snapshots: the golden input cases (``python -m vla_reference.preprocessing DIR``)
and the snapshot format.
"""

from ._cases import CASES, SNAPSHOT_DIR, case_items, record, snapshot_file
from ._snapshot import SNAPSHOT_SUFFIX, SnapshotData, compare, load_snapshot, parse, serialize, snapshot_images

__all__ = [
    "CASES",
    "SNAPSHOT_DIR",
    "case_items",
    "record",
    "snapshot_file",
    "SNAPSHOT_SUFFIX",
    "SnapshotData",
    "compare",
    "load_snapshot",
    "parse",
    "serialize",
    "snapshot_images",
]
