"""The model card on its own: required sections present, no placeholders, a BibTeX entry that parses.

The card is ``model/README.md`` (or ``MODEL_CARD.md``): YAML front matter and Markdown, as on a
model hub. ``lint_card`` reports, for each required section of ``card_rules.SECTIONS``, whether it
is ``present``, ``missing`` or ``placeholder`` (found, but nothing written in it), and a list of
findings, each naming the section and the fix. Checks that need the release (version, license
file, parameter count...) are in ``card_release``.
"""

from __future__ import annotations

import datetime as dt
import functools
import operator
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Final

from .._fs import read_text
from ..findings import Finding
from ._markdown import Block, Document, parse_document, title_variants, words
from ._rules import (
    EMPTY_VALUES,
    FACTS,
    PLACEHOLDER_PATTERN,
    SECTIONS,
    Synonyms,
)

__all__ = [
    "CARD_NAMES",
    "CHECKS",
    "Status",
    "ModelCard",
    "CardFinding",
    "CardReport",
    "find_card",
    "read_card",
    "parse_card",
    "parse_date",
    "section_blocks",
]

CARD_NAMES: Final = ("README.md", "MODEL_CARD.md")
# what lint_card checks; the release cross-checks of card_release add their own names
CHECKS: Final = ("front_matter", "section", "placeholder", "license", "release_date")
# The longest real cards are ~100 KB of Markdown; ten times that is refused unread.
MAX_CARD_BYTES: Final = 1 << 20
PRESENT: Final = "present"
MISSING: Final = "missing"
PLACEHOLDER: Final = "placeholder"
Status = str  # one of PRESENT, MISSING, PLACEHOLDER

# every title the tables know: a plain "Label:" line is structure only if it is one of these
_ALL_LABELS: Final[Synonyms] = functools.reduce(
    operator.or_,
    [s.synonyms for s in SECTIONS] + [i.labels for s in SECTIONS for i in s.items] + [f.labels for f in FACTS.values()],
    Synonyms(),
)

_FENCE_OPEN: Final = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([\w+-]*)")
_MONTHS: Final = {
    m: i + 1
    for i, names in enumerate(
        (
            "january jan",
            "february feb",
            "march mar",
            "april apr",
            "may",
            "june jun",
            "july jul",
            "august aug",
            "september sep sept",
            "october oct",
            "november nov",
            "december dec",
        )
    )
    for m in names.split()
}


def find_card(path: Path) -> Path | None:
    """The card of a release (``model/README.md``, ``model/MODEL_CARD.md``, ``MODEL_CARD.md``),
    of a model directory (``README.md``, ``MODEL_CARD.md``), or ``path`` itself if it is a file."""
    if path.is_file():
        return path
    if (path / "model").is_dir() or (path / "release.json").is_file():
        candidates = [path / "model" / n for n in CARD_NAMES] + [path / "MODEL_CARD.md"]
    else:
        candidates = [path / n for n in CARD_NAMES]
    return next((c for c in candidates if c.is_file()), None)


@dataclass
class ModelCard:
    """A parsed model card: its front matter and outline (see ``_markdown``)."""

    path: Path | None
    doc: Document
    _variants: dict[int, tuple[str, ...]] = field(default_factory=dict, repr=False)
    _reports: dict[dt.date, CardReport] = field(default_factory=dict, repr=False)

    @property
    def front_matter(self) -> dict[str, Any]:
        return self.doc.front_matter

    def variants(self, block: Block) -> tuple[str, ...]:
        key = block.line
        if key not in self._variants:
            self._variants[key] = title_variants(block.title)
        return self._variants[key]

    def blocks_named(self, synonyms: Synonyms) -> list[Block]:
        """The headings and labels whose title ``synonyms`` match."""
        return [b for b in self.doc.blocks if synonyms.match(self.variants(b))]

    def substance(self, block: Block, *, code: bool = True) -> int:
        """Words of content under ``block`` once headings, labels, comments and placeholders are removed."""
        nested = {b.line - 1: b for b in self.doc.blocks if block.start <= b.line - 1 < block.end}
        parts = [block.inline]
        for i in range(block.start, block.end):
            inner = nested.get(i)
            if inner is not None:
                parts.append(inner.inline)
            elif self.doc.code[i]:
                if code and not _FENCE_OPEN.match(self.doc.lines[i]):
                    parts.append(self.doc.lines[i])
            else:
                parts.append(self.doc.masked[i])
        text = strip_placeholders("\n".join(parts))
        if re.sub(r"[\s|*_>#:\-]+", " ", text).strip().lower() in EMPTY_VALUES:
            return 0
        return words(text)

    def text(self, blocks: Iterable[Block]) -> str:
        """The content under ``blocks`` (outermost only, no duplicates), placeholders removed."""
        return strip_placeholders("\n".join(self.doc.content(b) for b in outermost(blocks)))

    @cached_property
    def body_text(self) -> str:
        """All the body text (code included), placeholders and comments removed."""
        parts = [
            self.doc.lines[i] if self.doc.code[i] else self.doc.masked[i]
            for i in range(self.doc.body_start, len(self.doc.lines))
        ]
        return strip_placeholders("\n".join(parts))

    def heading_path(self, line_index: int) -> str:
        """``Uses > Direct Use``: the headings (below the title) that hold a line."""
        chain = [
            b.title
            for b in self.doc.blocks
            if b.level > 1 and ((b.is_heading and b.start <= line_index < b.end) or b.line - 1 == line_index)
        ]
        return " > ".join(chain) if chain else "(top of the card)"

    def fenced_blocks(self, infos: frozenset[str]) -> Iterator[tuple[int, str]]:
        """(0-based first line, text) of every fenced code block whose info string is in ``infos``."""
        lines, i = self.doc.lines, self.doc.body_start
        while i < len(lines):
            m = _FENCE_OPEN.match(lines[i])
            if m and self.doc.code[i]:
                j = i + 1
                while j < len(lines) and self.doc.code[j] and not lines[j].strip().startswith(m.group(1)):
                    j += 1
                if m.group(2).lower() in infos:
                    yield i + 1, "\n".join(lines[i + 1 : j])
                i = j + 1
            else:
                i += 1


def section_blocks(card: ModelCard) -> dict[str, list[Block]]:
    """The blocks that hold each required section.

    Headings count wherever they are; a run-in label (``- **Bias:** ...``) counts unless it lies
    inside another required section, where it is that section's item, not a section of its own.
    """
    named = {s.key: card.blocks_named(s.synonyms) for s in SECTIONS}
    headings = {k: [b for b in bs if b.is_heading] for k, bs in named.items()}
    out = {}
    for key, blocks in named.items():
        others = [o for k, bs in headings.items() if k != key for o in bs if o.level > 1]
        out[key] = [b for b in blocks if b.is_heading or not any(o.start <= b.line - 1 < o.end for o in others)]
    return out


def strip_placeholders(text: str) -> str:
    """``text`` without any placeholder of ``card_rules.PLACEHOLDERS``."""
    return PLACEHOLDER_PATTERN.sub(" ", text)


def outermost(blocks: Iterable[Block]) -> list[Block]:
    """``blocks`` without those nested in another of them."""
    blocks = sorted(blocks, key=lambda b: (b.line, -b.end))
    out: list[Block] = []
    for b in blocks:
        if not any(o.start <= b.line - 1 < o.end for o in out):
            out.append(b)
    return out


def parse_card(text: str, path: Path | None = None) -> ModelCard:
    """Parse card text (front matter and outline).

    Example:
        >>> card = parse_card("---\\nlicense: mit\\n---\\n# X\\n## Uses\\nResearch.\\n")
        >>> card.front_matter["license"], [b.title for b in card.doc.blocks]
        ('mit', ['X', 'Uses'])
    """
    return ModelCard(path, parse_document(text, known=_ALL_LABELS.match))


def read_card(path: Path) -> ModelCard:
    """Read and parse a card file; MalformedFileError if it cannot be read as UTF-8 text, is not a
    regular file, or is larger than MAX_CARD_BYTES (the linter's work stays bounded)."""
    return parse_card(read_text(path, max_bytes=MAX_CARD_BYTES, what="model card"), path)


@dataclass(frozen=True)
class CardFinding:
    """A finding about the card: which check, which required section (if any), the problem."""

    check: str  # one of CHECKS, or a release cross-check's name
    section: str | None
    problem: Finding

    def to_json(self, root: Path | None = None) -> dict[str, Any]:
        """The finding record (:meth:`Finding.as_dict`) with the check, section and rendered line."""
        return {
            "check": self.check,
            "section": self.section,
            **self.problem.as_dict(root),
            "message": self.problem.render(root),
        }


@dataclass
class CardReport:
    """Section statuses (``present``/``missing``/``placeholder``) and findings of one card."""

    path: Path | None
    sections: dict[str, Status]
    findings: list[CardFinding]

    def of(self, check: str, section: str | None = None) -> list[Finding]:
        """The problems one check found (for one section, if given)."""
        return [f.problem for f in self.findings if f.check == check and (section is None or f.section == section)]

    def to_json(self, root: Path | None = None) -> dict[str, Any]:
        """``{"sections": {key: status}, "findings": [...]}`` as the CLI prints it."""
        return {"sections": dict(self.sections), "findings": [f.to_json(root) for f in self.findings]}


# -- dates ----------------------------------------------------------------------------------------


def parse_date(text: str) -> dt.date | None:
    """A calendar date written as ISO, ``April 18, 2024``, ``18 April 2024``, ``2024/10/26`` or ``2024年10月26日``."""
    t = text.strip()
    m = re.search(r"\b(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})\b", t) or re.search(r"(\d{4})年(\d{1,2})月(\d{1,2})日", t)
    if m:
        y, mo, d = (int(x) for x in m.groups())
    else:
        m1 = re.search(r"\b([A-Za-z]{3,9})\.?\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})\b", t)
        m2 = re.search(r"\b(\d{1,2})(?:st|nd|rd|th)?\s+([A-Za-z]{3,9})\.?,?\s+(\d{4})\b", t)
        if m1 and m1.group(1).lower() in _MONTHS:
            y, mo, d = int(m1.group(3)), _MONTHS[m1.group(1).lower()], int(m1.group(2))
        elif m2 and m2.group(2).lower() in _MONTHS:
            y, mo, d = int(m2.group(3)), _MONTHS[m2.group(2).lower()], int(m2.group(1))
        else:
            return None
    try:
        return dt.date(y, mo, d)
    except ValueError:
        return None


# -- the checks -----------------------------------------------------------------------------------
