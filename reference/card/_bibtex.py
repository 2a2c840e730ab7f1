"""A small BibTeX parser: enough to tell whether a model card's citation is an entry that parses.

Grammar (as BibTeX and biber read it): text outside ``@type{...}`` is ignored; an entry is
``@type{key, name = value, ...}`` (or with parentheses); a value is ``{...}`` with nested braces,
``"..."``, a number or a ``@string`` macro, joined with ``#``; ``@comment`` and ``@preamble`` are
skipped. Field names are case-insensitive; the outer braces or quotes are removed from values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from ..errors import MalformedFileError

__all__ = ["BibEntry", "BibTeXError", "parse_bibtex", "ENTRY_TYPES", "find_entries"]

# Entry types of BibTeX and biblatex; anything else is most likely a typo.
ENTRY_TYPES: Final = frozenset(
    """article book booklet conference inbook incollection inproceedings manual mastersthesis misc phdthesis
    proceedings techreport unpublished online electronic www software dataset report thesis patent collection
    mvbook mvcollection periodical suppbook suppcollection reference inreference artwork audio image movie music
    video performance standard""".split()
)
_MONTHS: Final = {m: m for m in "jan feb mar apr may jun jul aug sep oct nov dec".split()}
_START: Final = re.compile(r"@[ \t]*([A-Za-z]+)[ \t\r\n]*[{(]")
_NAME: Final = re.compile(r"[A-Za-z_][\w\-.:+/]*")
_KEY: Final = re.compile(r"[^\s,{}()\"#%'=\\]+")


class BibTeXError(MalformedFileError):
    """The BibTeX does not parse; ``line`` and ``column`` are 1-based within the parsed text."""

    def __init__(self, message: str, *, line: int, column: int, key: str | None = None) -> None:
        self.line = line
        self.column = column
        super().__init__(f"{message} at line {line}, column {column}", key=key, fix="fix the BibTeX entry")


@dataclass(frozen=True)
class BibEntry:
    """One entry: its type (lower case), citation key, fields (lower-case names) and first line."""

    type: str
    key: str
    fields: dict[str, str]
    line: int


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.macros: dict[str, str] = dict(_MONTHS)

    def error(self, message: str, pos: int | None = None, key: str | None = None) -> BibTeXError:
        pos = self.pos if pos is None else pos
        line = self.text.count("\n", 0, pos) + 1
        column = pos - (self.text.rfind("\n", 0, pos) + 1) + 1
        return BibTeXError(message, line=line, column=column, key=key)

    def ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def expect(self, chars: str, what: str, key: str | None = None) -> str:
        self.ws()
        if self.pos >= len(self.text):
            raise self.error(f"unexpected end of text, expected {what}", key=key)
        c = self.text[self.pos]
        if c not in chars:
            raise self.error(f"found {c!r}, expected {what}", key=key)
        self.pos += 1
        return c

    def braced(self, key: str | None) -> str:
        """The text inside balanced braces; ``self.pos`` is just past the opening brace."""
        start, depth = self.pos, 1
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c == "\\":
                self.pos += 2
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    self.pos += 1
                    return self.text[start : self.pos - 1]
            self.pos += 1
        raise self.error("unbalanced braces: '{' never closed", start - 1, key)

    def quoted(self, key: str | None) -> str:
        start, depth = self.pos, 0
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c == "\\":
                self.pos += 2
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth < 0:
                    raise self.error("unbalanced '}' inside a quoted value", key=key)
            elif c == '"' and depth == 0:
                self.pos += 1
                return self.text[start : self.pos - 1]
            self.pos += 1
        raise self.error("unterminated quoted value: '\"' never closed", start - 1, key)

    def value(self, key: str | None) -> str:
        parts = []
        while True:
            self.ws()
            if self.pos >= len(self.text):
                raise self.error("unexpected end of text, expected a value", key=key)
            c = self.text[self.pos]
            if c == "{":
                self.pos += 1
                parts.append(self.braced(key))
            elif c == '"':
                self.pos += 1
                parts.append(self.quoted(key))
            elif c.isdigit():
                end = self.pos
                while end < len(self.text) and self.text[end].isdigit():
                    end += 1
                parts.append(self.text[self.pos : end])
                self.pos = end
            else:
                m = _NAME.match(self.text, self.pos)
                if m is None:
                    raise self.error(f"found {c!r}, expected a value in braces, quotes, a number or a macro", key=key)
                name = m.group(0).lower()
                if name not in self.macros:
                    raise self.error(f"undefined string macro {m.group(0)!r}", key=key)
                parts.append(self.macros[name])
                self.pos = m.end()
            self.ws()
            if self.pos < len(self.text) and self.text[self.pos] == "#":
                self.pos += 1
                continue
            return "".join(parts)

    def skip_block(self, close: str) -> None:
        if close == "}":
            self.braced(None)
            return
        start, depth = self.pos, 1
        while self.pos < len(self.text):
            c = self.text[self.pos]
            depth += c == "("
            depth -= c == ")"
            self.pos += 1
            if depth == 0:
                return
        raise self.error("unbalanced parentheses: '(' never closed", start - 1)

    def fields(self, close: str, key: str | None) -> dict[str, str]:
        out: dict[str, str] = {}
        while True:
            self.ws()
            if self.pos >= len(self.text):
                raise self.error(f"unexpected end of text, expected {close!r} closing the entry", key=key)
            if self.text[self.pos] == close:
                self.pos += 1
                return out
            m = _NAME.match(self.text, self.pos)
            if m is None:
                raise self.error(f"found {self.text[self.pos]!r}, expected a field name or {close!r}", key=key)
            name = m.group(0).lower()
            if name in out:
                raise self.error(f"duplicate field {m.group(0)!r}", key=key)
            self.pos = m.end()
            self.expect("=", f"'=' after field {m.group(0)!r}", key)
            out[name] = self.value(key)
            self.ws()
            if self.pos < len(self.text) and self.text[self.pos] == ",":
                self.pos += 1
            elif self.pos < len(self.text) and self.text[self.pos] != close:
                raise self.error(f"found {self.text[self.pos]!r}, expected ',' or {close!r} after a field", key=key)

    def entries(self) -> list[BibEntry]:
        out: list[BibEntry] = []
        while True:
            m = _START.search(self.text, self.pos)
            if m is None:
                return out
            kind = m.group(1).lower()
            close = "}" if self.text[m.end() - 1] == "{" else ")"
            self.pos = m.end()
            line = self.text.count("\n", 0, m.start()) + 1
            if kind in ("comment", "preamble"):
                self.skip_block(close)
                continue
            if kind == "string":
                for name, value in self.fields(close, None).items():
                    self.macros[name] = value
                continue
            self.ws()
            k = _KEY.match(self.text, self.pos)
            if k is None:
                raise self.error(f"@{m.group(1)} entry has no citation key")
            key = k.group(0)
            self.pos = k.end()
            sep = self.expect("," + close, f"',' after the citation key {key!r}", key)
            fields = {} if sep == close else self.fields(close, key)
            out.append(BibEntry(kind, key, fields, line))


def parse_bibtex(text: str) -> list[BibEntry]:
    """Every entry in ``text``; raises BibTeXError (with line and column) at the first syntax error.

    Example:
        >>> [e.key for e in parse_bibtex("@misc{vla2024, title={VLA}, author={Team}, year=2024}")]
        ['vla2024']
    """
    return _Parser(text).entries()


def find_entries(text: str) -> bool:
    """Whether ``text`` holds something that starts a BibTeX entry (``@type{``)."""
    return any(m.group(1).lower() not in ("comment", "preamble", "string") for m in _START.finditer(text))
