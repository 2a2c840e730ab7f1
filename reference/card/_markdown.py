"""Markdown as model cards are really written: YAML front matter, and an outline of headings and labels.

Real cards mark their sections in many ways, and a linter that knows only ``## Heading`` fails
them all. The outline recognises, from strongest to weakest:

    level 1-6  ATX (``## Uses``, ``# **Model Details**``), setext, HTML (``<h2>Uses</h2>``)
    level 7    a line that is all bold (``**Intended Use**``, ``**2. Training Data:**``)
    level 8    a plain or numbered line that names a known section (``1. Intended Use:``)
    level 9    a run-in label opening a paragraph, list item or line (``**Out-of-scope Uses** Use in ...``,
               ``- **License:** MIT``, ``- 发布日期：2024-10-26``)

A block's content runs to the next block of the same or a stronger level. Fenced code and HTML
comments are never read as structure.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import yaml

from .._yaml import NoAliasLoader

__all__ = [
    "Block",
    "Document",
    "FrontMatterError",
    "parse_document",
    "title_variants",
    "normalize_title",
    "has_table",
    "table_rows",
    "words",
    "BOLD_LINE",
    "PLAIN_LABEL",
    "RUN_IN",
]

BOLD_LINE: Final = 7
PLAIN_LABEL: Final = 8
RUN_IN: Final = 9

_FENCE: Final = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_ATX: Final = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT: Final = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_HTML_HEADING: Final = re.compile(r"^\s*<h([1-6])\b[^>]*>(.*?)</h\1>\s*$", re.I)
_COMMENT: Final = re.compile(r"<!--.*?(?:-->|\Z)", re.S)
_LIST: Final = r"(?:[-*+][ \t]+|\d{1,3}[.)][ \t]+)?"
# **Label** rest | **Label:** rest | **Label**: rest | __Label__ rest
_BOLD: Final = re.compile(
    rf"^\s*{_LIST}(?:\*\*(?P<a>[^*\n]{{1,100}}?)\*\*|__(?P<b>[^_\n]{{1,100}}?)__)"
    r"[ \t]*(?P<colon>[:：])?[ \t]*(?P<rest>.*)$"
)
_PLAIN: Final = re.compile(rf"^\s*{_LIST}(?P<label>[^:：|#>\n]{{1,60}}?)[ \t]*(?P<colon>[:：])[ \t]*(?P<rest>.*)$")
_NUMBERED: Final = re.compile(
    r"^\s*(?:\d{1,3}(?:\.\d{1,3})*[.)、]?|[一二三四五六七八九十]+[、.．])"
    r"[ \t]*(?P<label>[^\n]{1,60}?)[ \t]*[:：]?[ \t]*$"
)
_TABLE_SEP: Final = re.compile(r"^\s*\|?\s*:?-+:?\s*(?:\|\s*:?-+:?\s*)*\|?\s*$")
_SENTENCE_END: Final = re.compile(r"[.!?。！？]$")

# Numbering and decoration people put in front of a heading.
_PREFIXES: Final = (
    re.compile(r"^(?:\d{1,3}(?:\.\d{1,3})*|[ivx]{1,4})[.)、:：]?\s+", re.I),
    re.compile(r"^\d{1,3}(?:\.\d{1,3})*[.)、]"),
    re.compile(r"^[一二三四五六七八九十百]+\s*[、.．]\s*"),
    re.compile(r"^[（(]\s*[一二三四五六七八九十\d]+\s*[)）]\s*"),
    re.compile(r"^第\s*[一二三四五六七八九十百\d]+\s*[章节部分条]\s*"),
    re.compile(r"^(?:section|part|chapter)\s+\d+[.:]?\s*", re.I),
)
_OPTIONAL: Final = re.compile(r"[\[(（【]\s*(?:optional|可选|选填)\s*[\])）】]", re.I)
_PAREN: Final = re.compile(r"[(（]([^()（）]*)[)）]")
_LINK: Final = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_TAG: Final = re.compile(r"<[^>]{0,200}>")
_CJK: Final = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


class FrontMatterError(ValueError):
    """The YAML front matter does not parse; ``line`` is 1-based in the file."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


class _TextLoader(NoAliasLoader):
    """SafeLoader without aliases that keeps numbers and dates as the text people wrote (``1.10``
    stays ``"1.10"``)."""


_KEEP_AS_TEXT: Final = {"tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp"}
_TextLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _KEEP_AS_TEXT]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass(frozen=True)
class Block:
    """A heading or label, and where its content lies in ``Document.lines``."""

    title: str
    level: int
    line: int  # 1-based line of the heading itself
    start: int  # index of the first content line
    end: int  # index after the last content line
    inline: str = ""  # a run-in label's text on its own line

    @property
    def is_heading(self) -> bool:
        """A heading of its own line (not a run-in label)."""
        return self.level <= PLAIN_LABEL


@dataclass
class Document:
    """A Markdown file split into front matter, lines and an outline."""

    text: str
    lines: list[str]
    front_matter: dict[str, Any]
    front_matter_error: FrontMatterError | None
    body_start: int  # index of the first line after the front matter
    code: list[bool]  # per line: inside a fenced code block (fence lines included)
    masked: list[str]  # lines with HTML comments blanked and code emptied
    comments: list[tuple[int, str]]  # (1-based line, text) of every HTML comment outside code
    blocks: list[Block] = field(default_factory=list)

    def content(self, block: Block, *, code: bool = True) -> str:
        """The text under ``block`` (its run-in text first), comments removed, code kept unless asked."""
        parts = [block.inline] if block.inline else []
        for i in range(block.start, block.end):
            if self.code[i]:
                if code:
                    parts.append(self.lines[i])
            else:
                parts.append(self.masked[i])
        return "\n".join(parts)

    def raw(self, block: Block) -> str:
        """The lines under ``block`` exactly as written (code and comments included)."""
        return "\n".join([block.inline, *self.lines[block.start : block.end]])

    def section_of(self, line_index: int) -> Block | None:
        """The innermost heading (not a run-in label) whose content holds ``line_index``."""
        best = None
        for b in self.blocks:
            if b.is_heading and b.start <= line_index < b.end and (best is None or b.level >= best.level):
                best = b
        return best

    @property
    def title(self) -> Block | None:
        """The first level-1 heading, if any."""
        return next((b for b in self.blocks if b.level == 1), None)


def _split_front_matter(lines: list[str]) -> tuple[dict[str, Any], FrontMatterError | None, int]:
    if not lines or lines[0].strip() != "---":
        return {}, None, 0
    for end in range(1, len(lines)):
        if lines[end].strip() in ("---", "..."):
            break
    else:
        return {}, FrontMatterError("front matter opened with '---' is never closed", 1), 0
    source = "\n".join(lines[1:end])
    try:
        data = yaml.load(source, Loader=_TextLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = (mark.line + 2) if mark is not None else 1
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        return {}, FrontMatterError(f"front matter is not valid YAML: {problem}", line), end + 1
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return {}, FrontMatterError(f"front matter is a {type(data).__name__}, not a mapping", 2), end + 1
    return {str(k): v for k, v in data.items()}, None, end + 1


def _mask(lines: list[str], start: int) -> tuple[list[bool], list[str], list[tuple[int, str]]]:
    """Mark fenced code, blank HTML comments (keeping line structure) and collect the comments."""
    code = [False] * len(lines)
    masked = list(lines)
    for i in range(start):
        code[i], masked[i] = True, ""  # front matter is not body text
    fence: str | None = None
    for i in range(start, len(lines)):
        m = _FENCE.match(lines[i])
        if fence is None and m:
            fence = m.group(1)[0] * len(m.group(1))
            code[i] = True
        elif fence is not None:
            code[i] = True
            stripped = lines[i].strip()
            if stripped.startswith(fence) and set(stripped) == {fence[0]}:
                fence = None
        if code[i]:
            masked[i] = ""
    text_lines = [("" if code[i] else lines[i]) for i in range(len(lines))]
    joined = "\n".join(text_lines)
    comments: list[tuple[int, str]] = []

    def blank(m: re.Match[str]) -> str:
        comments.append((joined.count("\n", 0, m.start()) + 1, m.group(0)))
        return re.sub(r"[^\n]", " ", m.group(0))

    blanked = _COMMENT.sub(blank, joined).split("\n")
    for i in range(start, len(lines)):
        if not code[i]:
            masked[i] = blanked[i]
    return code, masked, comments


def _strip_markup(text: str) -> str:
    text = html.unescape(_TAG.sub(" ", _LINK.sub(r"\1", text)))
    return re.sub(r"\s+", " ", text.replace("**", "").replace("__", "")).strip(" *_`~\t")


def normalize_title(text: str) -> str:
    """A heading as compared with the synonym tables: lower case, no markup, numbering or punctuation.

    Example:
        >>> normalize_title("**2. Out-of-Scope Use:**")
        'out of scope use'
    """
    t = _strip_markup(text).replace("’", "'").lower()
    t = _OPTIONAL.sub(" ", t).strip()
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            new = p.sub("", t, count=1).strip()
            if new != t and new:
                t, changed = new, True
    t = t.replace("&", " and ")
    t = re.sub(r"[^\w\s']|_", " ", t)
    return re.sub(r"\s+", " ", t).strip(" '")


def title_variants(text: str) -> tuple[str, ...]:
    """The normalized title, the title without parentheticals, and each parenthetical on its own."""
    out = [normalize_title(text)]
    outside = _PAREN.sub(" ", text)
    if outside != text:
        out.append(normalize_title(outside))
        out.extend(normalize_title(m) for m in _PAREN.findall(text))
    return tuple(dict.fromkeys(v for v in out if v))


def words(text: str) -> int:
    """How much prose ``text`` holds: Latin words of 2+ letters, plus CJK characters counted in pairs."""
    latin = len(re.findall(r"[A-Za-z]{2,}", text))
    return latin + len(_CJK.findall(text)) // 2


def table_rows(text: str) -> list[list[str]]:
    """The data rows (cells as text) of every Markdown and HTML table in ``text``."""
    rows: list[list[str]] = []
    for table in re.findall(r"<table\b.*?(?:</table>|\Z)", text, re.I | re.S):
        for tr in re.findall(r"<tr\b.*?(?:</tr>|(?=<tr\b)|\Z)", table, re.I | re.S):
            cells = [_strip_markup(c) for c in re.findall(r"<t[dh]\b[^>]*>(.*?)(?=<t[dh]\b|</tr>|\Z)", tr, re.I | re.S)]
            rows.append(cells)
    lines = text.splitlines()
    i = 1
    while i < len(lines) - 1:
        if "|" in lines[i - 1] and "-" in lines[i] and _TABLE_SEP.match(lines[i]):
            j = i + 1
            while j < len(lines) and "|" in lines[j]:
                rows.append([_strip_markup(c) for c in lines[j].strip().strip("|").split("|")])
                j += 1
            i = j
        i += 1
    return rows


def has_table(text: str) -> bool:
    """Whether ``text`` holds a Markdown table (header, delimiter, a row) or an HTML table."""
    return bool(table_rows(text))


def _indent(line: str) -> int:
    return len(line.expandtabs(4)) - len(line.expandtabs(4).lstrip())


def _candidate(masked: str, known: Callable[[Iterable[str]], bool]) -> tuple[int, str, str] | None:
    """(level, title, run-in text) if this line opens a block, else None.

    Run-in labels nest by indentation (a deeper list item belongs to the label above it).
    """
    deeper = RUN_IN + _indent(masked) // 2
    bullet = bool(re.match(r"^\s*[-*+][ \t]", masked))
    m = _BOLD.match(masked)
    if m:
        label = (m.group("a") or m.group("b") or "").strip()
        rest = m.group("rest").strip()
        inner = label.rstrip(":：").strip()
        if not inner:
            return None
        if not rest and not bullet and not _SENTENCE_END.search(inner) and len(inner.split()) <= 12:
            return BOLD_LINE, inner, ""
        if m.group("colon") or label.endswith((":", "：")) or known(title_variants(inner)):
            return deeper, inner, rest
        if not bullet and not _SENTENCE_END.search(inner) and len(inner.split()) <= 8:
            return deeper, inner, rest
        return None
    m = _PLAIN.match(masked)
    plain = m.group("label") if m else ""
    if (
        m
        and len(plain.split()) <= 6
        and "http" not in plain
        and not re.search(r"[.!?。！？]", plain)
        and known(title_variants(plain))
    ):
        rest = m.group("rest").strip()
        return (PLAIN_LABEL if not rest and not bullet else deeper), m.group("label").strip(), rest
    m = _NUMBERED.match(masked)
    if m and known(title_variants(m.group("label"))) and not _SENTENCE_END.search(m.group("label")):
        return PLAIN_LABEL, m.group("label").strip(), ""
    return None


def parse_document(text: str, *, known: Callable[[Iterable[str]], bool] = lambda _: False) -> Document:
    """Split ``text`` into front matter and an outline.

    Args:
        text: The Markdown file.
        known: Whether a plain (not bold, not ``#``) label names something the caller looks for;
            only such lines become blocks, so that ordinary numbered lists stay lists.

    Example:
        >>> doc = parse_document("# Card\\n\\n**Intended Use**\\nResearch.\\n")
        >>> [(b.level, b.title) for b in doc.blocks]
        [(1, 'Card'), (7, 'Intended Use')]
    """
    text = text.lstrip("\ufeff")
    lines = text.splitlines()
    front, error, body = _split_front_matter(lines)
    code, masked, comments = _mask(lines, body)
    opened: list[tuple[int, str, int, str]] = []  # (level, title, line index, inline)
    for i in range(body, len(lines)):
        if code[i] or not masked[i].strip():
            continue
        line = masked[i]
        m = _ATX.match(line)
        if m:
            opened.append((len(m.group(1)), _strip_markup(m.group(2) or ""), i, ""))
            continue
        m = _HTML_HEADING.match(line)
        if m:
            opened.append((int(m.group(1)), _strip_markup(m.group(2)), i, ""))
            continue
        nxt = masked[i + 1] if i + 1 < len(lines) and not code[i + 1] else ""
        s = _SETEXT.match(nxt)
        if s and not line.lstrip().startswith(("|", "-", "*", ">")) and (s.group(1)[0] == "=" or len(s.group(1)) >= 2):
            prev_blank = i == body or not masked[i - 1].strip()
            if prev_blank:
                opened.append((1 if s.group(1)[0] == "=" else 2, _strip_markup(line), i, ""))
                continue
        if line.lstrip().startswith("|"):
            continue
        cand = _candidate(line, known)
        if cand is not None:
            opened.append((cand[0], _strip_markup(cand[1]), i, cand[2]))
    blocks: list[Block] = []
    for n, (level, title, i, inline) in enumerate(opened):
        end = len(lines)
        for later_level, _, j, _ in opened[n + 1 :]:
            if later_level <= level:
                end = j
                break
        setext = i + 1 < len(lines) and bool(_SETEXT.match(masked[i + 1])) and level <= 2 and not inline
        start = i + 2 if setext and not _ATX.match(masked[i]) else i + 1
        blocks.append(Block(title=title, level=level, line=i + 1, start=min(start, end), end=end, inline=inline))
    return Document(text, lines, front, error, body, code, masked, comments, blocks)
