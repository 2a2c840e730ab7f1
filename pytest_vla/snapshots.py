"""syrupy extension for pytest-vla's tensor snapshots (format: vla_reference.preprocessing)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

from vla_reference.preprocessing import SnapshotData, compare, parse, serialize

__all__ = [
    "SnapshotData",
    "serialize",
    "parse",
    "compare",
    "TensorSnapshotExtension",
    "extension_for",
    "skip_while_updating",
    "UPDATING_REASON",
]

UPDATING_REASON = (
    "--snapshot-update: release.json is refreshed when this run ends, after the snapshots are written; "
    "rerun without --snapshot-update to check it"
)


def skip_while_updating(config: Any) -> None:
    """Skip a check of release.json against the files in a ``--snapshot-update`` run: the run
    rewrites snapshot files, then release.json (pytest_vla.plugin), so what it would find stale
    is what the same run refreshes."""
    import pytest

    if getattr(config.option, "update_snapshots", False):
        # Why skip: the run refreshes release.json itself once the snapshots are written; the next
        # run without --snapshot-update checks it.
        pytest.skip(UPDATING_REASON)


class TensorSnapshotExtension(SingleFileSnapshotExtension):
    """syrupy extension: one text file per snapshot, tensors compared as the module docstring says."""

    _write_mode = WriteMode.TEXT
    file_extension = "vla.txt"
    directory: ClassVar[Path | None] = None

    def serialize(self, data: Any, **kwargs: Any) -> str:  # type: ignore[override]
        if not isinstance(data, SnapshotData):
            data = SnapshotData(dict(data))
        return serialize(data)

    def matches(self, *, serialized_data: Any, snapshot_data: Any) -> bool:
        try:
            return not compare(str(serialized_data), str(snapshot_data))
        except (ValueError, KeyError):
            return False

    def diff_lines(self, serialized_data: Any, snapshot_data: Any) -> Iterator[str]:
        try:
            yield from compare(str(serialized_data), str(snapshot_data))
        except (ValueError, KeyError) as e:
            yield f"the recorded snapshot is unreadable: {e}"

    @classmethod
    def dirname(cls, *, test_location: Any) -> str:
        if cls.directory is None:
            return super().dirname(test_location=test_location)
        return str(cls.directory / test_location.basename)

    @classmethod
    def discovery_dirname(cls, *, test_location: Any) -> str:
        return cls.dirname(test_location=test_location)


def extension_for(directory: Path) -> type[TensorSnapshotExtension]:
    """The extension class storing snapshots in ``directory`` (syrupy wants a class)."""
    return type("ReleaseSnapshotExtension", (TensorSnapshotExtension,), {"directory": directory})
