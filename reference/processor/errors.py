"""The processor's errors: all in the ReleaseError family, each naming the key or the item at fault."""

from __future__ import annotations

from ..errors import MalformedFileError, ReleaseError

__all__ = ["ProcessorConfigError", "CodebookError", "ItemError", "ScriptSyntaxError", "ActionDecodeError"]


class ProcessorConfigError(ReleaseError):
    """A processor config value is missing, of the wrong type, out of range or disagrees with the tokenizer."""


class CodebookError(MalformedFileError):
    """A shipped codebook file is missing, corrupt, of the wrong shape or not the one the config names."""


class ItemError(ReleaseError):
    """One input item cannot be processed; once the processor locates it, the message names its position.

    Attributes:
        batch: The sequence's index in the batch, when known.
        index: The item's index in its sequence, when known.
        kind: The item's kind ("image", "video", ...), when known.
    """

    def __init__(
        self,
        message: str,
        *,
        fix: str | None = None,
        batch: int | None = None,
        index: int | None = None,
        kind: str | None = None,
    ) -> None:
        self.batch = batch
        self.index = index
        self.kind = kind
        super().__init__(message, key=self._position_key(), fix=fix)

    def _position_key(self) -> str | None:
        if self.index is None:
            return None
        return f"items[{self.index}]" if self.batch is None else f"items[{self.batch}][{self.index}]"

    def _render(self) -> str:
        text = self.detail
        if self.index is not None:
            where = f"item {self.index}" if self.batch is None else f"sequence {self.batch}, item {self.index}"
            text = f"{where} ({self.kind or 'unknown kind'}): {text}"
        if self.fix:
            text += f". Fix: {self.fix}"
        return text

    def located(self, *, batch: int | None, index: int, kind: str) -> ItemError:
        """The same error (same class and attributes), now naming the item's position."""
        located = type(self).__new__(type(self))  # no __init__: subclasses have other signatures
        located.__dict__.update(self.__dict__)
        located.batch, located.index, located.kind = batch, index, kind
        located.key = located._position_key()
        located.args = (located._render(),)
        return located


class ScriptSyntaxError(ItemError):
    """A 3D script breaks the grammar; ``line`` and ``column`` are 1-based."""

    def __init__(self, message: str, *, line: int, column: int, fix: str | None = None) -> None:
        self.line = line
        self.column = column
        super().__init__(f"line {line}, column {column}: {message}", fix=fix)


class ActionDecodeError(ReleaseError):
    """A token sequence is not a well-formed action sequence; nothing is decoded (never silent zeros)."""
