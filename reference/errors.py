"""One error family for everything a release or checkpoint can get wrong."""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "ReleaseError",
    "LayoutError",
    "ShardMismatchError",
    "UnsafeCheckpointError",
    "MalformedFileError",
    "UnsupportedModelError",
]


class ReleaseError(Exception):
    """A problem with an input file, naming the file, the key and what to do.

    Attributes:
        path: The file or directory at fault, if one is known.
        key: The tensor or config key at fault, if one is known.
        fix: One sentence on what to do about it.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        key: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.key = key
        self.fix = fix
        self.detail = message
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.path is not None:
            where.append(str(self.path))
        if self.key is not None:
            where.append(self.key)
        text = self.detail
        if where:
            text += f" [{':'.join(where)}]"
        if self.fix:
            text += f". Fix: {self.fix}"
        return text


class LayoutError(ReleaseError):
    """The directory layout or the recorded hyperparameters are inconsistent."""


class ShardMismatchError(ReleaseError):
    """Shards that must agree (replicas, shapes against args) do not."""


class UnsafeCheckpointError(ReleaseError):
    """A pickle asks for code outside the allow-list; it was not executed."""


class MalformedFileError(ReleaseError):
    """A file is truncated, corrupt or not the format its name says."""


class UnsupportedModelError(ReleaseError):
    """The model is valid Megatron but outside what the converter can express exactly."""
