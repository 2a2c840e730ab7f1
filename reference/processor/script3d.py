"""3D scene scripts: a small line grammar, validated with line/column errors, and their token pieces.

Grammar (one statement per line; blank lines and ``#`` comments ignored)::

    statement = primitive | transform | "group" | "end"
    primitive = "cube" size | "plane" size | "sphere" radius
              | "cylinder" radius height | "cone" radius height | "torus" major minor
    transform = ("translate" | "rotate" | "scale") x y z      (applies to the next primitive or group)
    number    = ["-"] digits ["." digits]                       (no exponent, no "+", no "inf"/"nan")

``group`` ... ``end`` nest and must balance; a transform must be followed, in its block, by the
primitive or group it applies to. Each statement becomes its keyword token (the ``script``
template, ``<|blender:cube|>``) followed by its numbers, each rounded half-even to
``script_decimals`` places, written without trailing zeros (``-0`` becomes ``0``) and
tokenised as text with a leading space (so numbers stay separate when decoded).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Final

from .errors import ScriptSyntaxError

__all__ = ["Keyword", "KEYWORDS", "Statement", "parse_script", "canonical_number", "script_pieces"]


@dataclass(frozen=True)
class Keyword:
    """A script keyword, the names of its numeric parameters and its role."""

    word: str
    params: tuple[str, ...]
    role: str  # "primitive", "transform", "open" or "close"


KEYWORDS: Final[tuple[Keyword, ...]] = (
    Keyword("cube", ("size",), "primitive"),
    Keyword("sphere", ("radius",), "primitive"),
    Keyword("cylinder", ("radius", "height"), "primitive"),
    Keyword("cone", ("radius", "height"), "primitive"),
    Keyword("plane", ("size",), "primitive"),
    Keyword("torus", ("major", "minor"), "primitive"),
    Keyword("translate", ("x", "y", "z"), "transform"),
    Keyword("rotate", ("x", "y", "z"), "transform"),
    Keyword("scale", ("x", "y", "z"), "transform"),
    Keyword("group", (), "open"),
    Keyword("end", (), "close"),
)
_BY_WORD: Final = {k.word: k for k in KEYWORDS}
_NUMBER: Final = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_WORD: Final = re.compile(r"\S+")


@dataclass(frozen=True)
class Statement:
    """One parsed statement: its keyword, canonical numbers and 1-based position."""

    keyword: Keyword
    numbers: tuple[str, ...]
    line: int
    column: int


def canonical_number(text: str, decimals: int) -> str:
    """The canonical form of a number literal (module docstring).

    >>> [canonical_number(t, 3) for t in ("1.50", "-0.0004", "2", "0.0005", "0.0015", "-12.34567")]
    ['1.5', '0', '2', '0', '0.002', '-12.346']
    """
    ctx = Context(prec=len(text) + decimals + 2)
    value = Decimal(text).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_EVEN, context=ctx)
    out = format(value, "f")
    if "." in out:
        out = out.rstrip("0").rstrip(".")
    return "0" if out in ("-0", "") else out


def parse_script(text: str, *, decimals: int) -> list[Statement]:
    """Parse and validate a script.

    Raises:
        ScriptSyntaxError: an unknown keyword, a malformed number, the wrong number of numbers, an
            unbalanced ``group``/``end`` or a dangling transform, naming line and column.
    """
    statements: list[Statement] = []
    opened: list[Statement] = []
    pending: Statement | None = None  # a transform still waiting for its target
    for line_no, line in enumerate(text.splitlines(), start=1):
        words = list(_WORD.finditer(line.split("#", 1)[0]))
        if not words:
            continue
        head, args = words[0], words[1:]
        column = head.start() + 1
        keyword = _BY_WORD.get(head.group())
        if keyword is None:
            raise ScriptSyntaxError(
                f"unknown keyword {head.group()!r}",
                line=line_no,
                column=column,
                fix=f"use one of {[k.word for k in KEYWORDS]}",
            )
        if len(args) != len(keyword.params):
            at = args[len(keyword.params)] if len(args) > len(keyword.params) else None
            raise ScriptSyntaxError(
                f"{keyword.word!r} takes {len(keyword.params)} number(s) ({', '.join(keyword.params) or 'none'}), "
                f"found {len(args)}",
                line=line_no,
                column=at.start() + 1 if at else column,
                fix=f"write '{' '.join((keyword.word, *keyword.params))}'",
            )
        for arg in args:
            if not _NUMBER.fullmatch(arg.group()):
                raise ScriptSyntaxError(
                    f"{arg.group()!r} is not a number",
                    line=line_no,
                    column=arg.start() + 1,
                    fix="write numbers as -12.5 (digits, optional '-' and decimal point; no exponent)",
                )
        stmt = Statement(keyword, tuple(canonical_number(a.group(), decimals) for a in args), line_no, column)
        if keyword.role == "close":
            _no_dangling(pending)
            if not opened:
                raise ScriptSyntaxError("'end' without an open 'group'", line=line_no, column=column, fix="remove it")
            opened.pop()
        elif keyword.role == "open":
            opened.append(stmt)
            pending = None
        elif keyword.role == "primitive":
            pending = None
        else:
            pending = pending or stmt
        statements.append(stmt)
    _no_dangling(pending)
    if opened:
        raise ScriptSyntaxError(
            "'group' is never closed", line=opened[-1].line, column=opened[-1].column, fix="add 'end'"
        )
    if not statements:
        raise ScriptSyntaxError("the script has no statements", line=1, column=1, fix="write at least one primitive")
    return statements


def _no_dangling(pending: Statement | None) -> None:
    if pending is not None:
        raise ScriptSyntaxError(
            f"{pending.keyword.word!r} applies to nothing: no primitive or group follows it in its block",
            line=pending.line,
            column=pending.column,
            fix="put the primitive or group it transforms after it",
        )


def script_pieces(statements: list[Statement]) -> list[tuple[str, str]]:
    """``("keyword", word)`` and ``("number", canonical)`` pieces, in order."""
    pieces: list[tuple[str, str]] = []
    for s in statements:
        pieces.append(("keyword", s.keyword.word))
        pieces.extend(("number", n) for n in s.numbers)
    return pieces
