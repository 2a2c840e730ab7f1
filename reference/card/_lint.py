"""The card linter: front matter, required sections, placeholders, license and release date, each a CardFinding."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Final

from ..findings import Finding
from ._bibtex import ENTRY_TYPES, BibEntry, BibTeXError, find_entries, parse_bibtex
from ._card import (
    MISSING,
    PLACEHOLDER,
    PRESENT,
    CardFinding,
    CardReport,
    ModelCard,
    Status,
    outermost,
    parse_date,
    section_blocks,
    strip_placeholders,
)
from ._licenses import parse_expression, suggest
from ._markdown import Block, table_rows, words
from ._rules import (
    BIBTEX_INFO_STRINGS,
    FACTS,
    PLACEHOLDERS,
    SECTION_KEYS,
    SECTIONS,
    Item,
    ItemKind,
    Scope,
    Section,
)

# Front-matter fields the Hub reads, and the YAML types it accepts for them.
_HUB_FIELDS: Final[dict[str, str]] = {
    "license": "strings",
    "language": "strings",
    "tags": "strings",
    "datasets": "strings",
    "library_name": "string",
    "pipeline_tag": "string",
    "model_name": "string",
    "base_model": "strings",
    "version": "string",
    "release_date": "date",
}

_KIND_TEXT: Final = {
    "string": "a string",
    "strings": "a string or a list of strings",
    "date": "a date (YYYY-MM-DD)",
}


def _is_kind(value: Any, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "strings":
        return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
    return isinstance(value, (str, dt.date))  # YAML reads an unquoted YYYY-MM-DD as a date


class _Linter:
    def __init__(self, card: ModelCard, today: dt.date) -> None:
        self.card = card
        self.doc = card.doc
        self.today = today
        self.findings: list[CardFinding] = []
        self.sections: dict[str, Status] = {}
        self.section_blocks = section_blocks(card)

    def add(self, check: str, section: str | None, **kw: Any) -> None:
        self.findings.append(CardFinding(check, section, Finding(path=self.card.path, **kw)))

    def section_key_of(self, line_index: int) -> str | None:
        """The required section whose innermost matching block holds a line."""
        best: tuple[int, str] | None = None
        for key, blocks in self.section_blocks.items():
            for b in blocks:
                if (b.start <= line_index < b.end or b.line - 1 == line_index) and (best is None or b.level > best[0]):
                    best = (b.level, key)
        return best[1] if best else None

    # front matter ---------------------------------------------------------------------------------

    def front_matter(self) -> None:
        err = self.doc.front_matter_error
        if err is not None:
            self.add(
                "front_matter",
                None,
                what="front matter unreadable",
                observed=str(err),
                expected="a YAML mapping between '---' lines",
                key="front matter",
                line=err.line,
                fix="fix the YAML between the '---' lines (quote values containing ':')",
            )
        fm = self.card.front_matter
        for key, kind in _HUB_FIELDS.items():
            value = fm.get(key)
            if value is not None and not _is_kind(value, kind):
                self.add(
                    "front_matter",
                    None,
                    what="front matter value of the wrong type",
                    observed=f"{key}: {value!r}",
                    expected=_KIND_TEXT[kind],
                    key=f"front matter:{key}",
                    fix=f"write '{key}' as {_KIND_TEXT[kind]} (the Hub reads it so), or remove it",
                )
        lic = fm.get("license")
        if lic is not None:
            for value in lic if isinstance(lic, list) else [lic]:
                self.front_matter_license(str(value), fm)
        for key in FACTS["release_date"].front_matter:
            value = fm.get(key)
            if isinstance(value, str) and value.strip():
                self.front_matter_date(key, value)
        for key, value in fm.items():
            if isinstance(value, str) and strip_placeholders(value).strip() != value.strip():
                self.add(
                    "placeholder",
                    None,
                    what="placeholder in the front matter",
                    observed=repr(value),
                    expected="the actual value",
                    key=f"front matter:{key}",
                    fix=f"fill in '{key}' or remove it",
                )

    def front_matter_license(self, value: str, fm: dict[str, Any]) -> None:
        if not strip_placeholders(value).strip():
            return  # reported as a placeholder
        if value.strip().lower() == "other":
            if not (fm.get("license_name") and fm.get("license_link")):
                self.add(
                    "license",
                    "basic_information",
                    what="custom license not described",
                    observed="license: other without license_name and license_link",
                    expected="license_name and license_link beside 'license: other'",
                    key="front matter:license",
                    fix="add 'license_name: <short-id>' and 'license_link: LICENSE', or use an SPDX identifier",
                )
            return
        _, unknown = parse_expression(value)
        for part in unknown:
            hint = suggest(part)
            self.add(
                "license",
                "basic_information",
                what="unknown license identifier",
                observed=repr(part),
                expected="an SPDX identifier as the Hub writes it (apache-2.0, mit, cc-by-4.0, llama3...)",
                key="front matter:license",
                fix=f"write {hint!r}" if hint else "use an SPDX identifier, or 'other' with license_name/license_link",
            )

    def front_matter_date(self, key: str, value: str) -> None:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()) or parse_date(value) is None:
            self.add(
                "release_date",
                "basic_information",
                what="release date not ISO 8601",
                observed=repr(value),
                expected="YYYY-MM-DD",
                key=f"front matter:{key}",
                fix=f"write the date as YYYY-MM-DD (e.g. {self.today.isoformat()})",
            )
            return
        date = parse_date(value)
        if date is not None and date > self.today:
            self.add(
                "release_date",
                "basic_information",
                what="release date in the future",
                observed=value,
                expected=f"on or before {self.today.isoformat()}",
                key=f"front matter:{key}",
                fix="correct the release date",
            )

    # sections -------------------------------------------------------------------------------------

    def section(self, section: Section) -> None:
        blocks = self.section_blocks[section.key]
        if section.cites and not blocks:
            status = (
                PRESENT if any(find_entries(t) for _, t in self.card.fenced_blocks(BIBTEX_INFO_STRINGS)) else MISSING
            )
        elif blocks:
            status = PRESENT if any(self.substance(section, b) >= 2 for b in blocks) else PLACEHOLDER
        else:
            status = MISSING
        items = {item.key: self.item(section, item, blocks) for item in section.items}
        if section.items_suffice and status == MISSING and all(s == PRESENT for s, _ in items.values()):
            status = PRESENT  # every fact is stated, in front matter or labels, without a heading
        self.sections[section.key] = status
        if status != PRESENT:
            where = blocks[0] if blocks else None
            self.add(
                "section",
                section.key,
                what=f"{section.title.lower()} {'missing' if status == MISSING else 'holds only placeholders'}",
                observed=(
                    f"no heading or label for it (looked for {section.heading!r} and its synonyms)"
                    if status == MISSING
                    else f"{where.title!r} has no content beyond placeholders"
                    if where
                    else "no content"
                ),
                expected=f"a {section.heading!r} section with content",
                key=section.key,
                line=where.line if where else None,
                fix=section.fix,
            )
            return
        for item in section.items:
            item_status, where = items[item.key]
            if item.kind is ItemKind.BIBTEX:
                continue
            if item_status != PRESENT:
                self.add(
                    "section",
                    section.key,
                    what=f"{item.title} {'not stated' if item_status == MISSING else 'holds only placeholders'}",
                    observed=(
                        f"no {item.title!r} heading, label or statement in {section.title.lower()}"
                        if item_status == MISSING
                        else f"{where.title!r} has no content beyond placeholders"
                        if where
                        else "placeholder"
                    ),
                    key=f"{section.key}.{item.key}",
                    line=where.line if where else None,
                    fix=item.fix,
                )
        if section.cites:
            self.bibtex(section, blocks)

    def substance(self, section: Section, block: Block) -> int:
        """Content words; a citation counts its prose and the non-placeholder values of its BibTeX."""
        if not section.cites:
            return self.card.substance(block)
        prose = self.card.substance(block, code=False)
        try:
            entries = parse_bibtex(self.doc.raw(block))
        except BibTeXError:
            return prose + 2  # something was written; the parse error is reported on its own
        return prose + sum(words(strip_placeholders(v)) for e in entries for v in e.fields.values())

    def item(self, section: Section, item: Item, blocks: list[Block]) -> tuple[Status, Block | None]:
        fm = self.card.front_matter
        if item.kind is ItemKind.TABLE:
            rows = [row for b in blocks for row in table_rows(self.doc.content(b))]
            if any(re.search(r"\d", strip_placeholders(cell)) for row in rows for cell in row):
                return PRESENT, None  # a table that holds numbers: results
            index = fm.get("model-index")
            if isinstance(index, list) and any(isinstance(m, dict) and m.get("results") for m in index):
                return PRESENT, None
            return MISSING, None
        if item.kind is ItemKind.BIBTEX:
            return PRESENT, None
        for key in item.front_matter:
            value = fm.get(key)
            if value not in (None, "", []) and strip_placeholders(str(value)).strip():
                return PRESENT, None
        labelled = self.card.blocks_named(item.labels)
        if any(self.card.substance(b) >= 1 for b in labelled):
            return PRESENT, None
        pattern = item.keyword_pattern
        if pattern is not None and pattern.search(self.scope_text(item, blocks)):
            return PRESENT, None
        return (PLACEHOLDER, labelled[0]) if labelled else (MISSING, None)

    def scope_text(self, item: Item, blocks: list[Block]) -> str:
        if item.scope is Scope.CARD:
            return self.card.body_text
        if item.scope is Scope.TITLE:
            title = self.doc.title
            names = [str(self.card.front_matter.get(k, "")) for k in FACTS["name"].front_matter]
            opening = self.card.text(blocks)[:400]
            return "\n".join([title.title if title else "", *names, opening])
        return self.card.text(blocks)

    def bibtex(self, section: Section, blocks: list[Block]) -> None:
        sources: list[tuple[int, str]] = [(b.line, self.doc.raw(b)) for b in outermost(blocks)]
        if not blocks:
            sources = [(line + 1, text) for line, text in self.card.fenced_blocks(BIBTEX_INFO_STRINGS)]
        item = next(i for i in section.items if i.kind is ItemKind.BIBTEX)
        found = False
        for first_line, text in sources:
            try:
                entries = parse_bibtex(text)
            except BibTeXError as e:
                found = True
                self.add(
                    "section",
                    section.key,
                    what="BibTeX does not parse",
                    observed=e.detail.rsplit(" at line", 1)[0],
                    expected="entries of the form @type{key, field = {value}, ...}",
                    key=f"{section.key}.bibtex" + (f":{e.key}" if e.key else ""),
                    line=first_line + e.line - 1,
                    fix="fix the entry (balanced braces, '=' after each field name, ',' between fields)",
                )
                continue
            for entry in entries:
                found = True
                self.bibtex_entry(section, entry, first_line)
        if not found:
            self.add(
                "section",
                section.key,
                what="no BibTeX entry",
                observed=f"{blocks[0].title!r} has no @type{{key, ...}} entry" if blocks else "no citation",
                key=f"{section.key}.bibtex",
                line=blocks[0].line if blocks else None,
                fix=item.fix,
            )

    def bibtex_entry(self, section: Section, entry: BibEntry, first_line: int) -> None:
        line = first_line + entry.line - 1
        need = (("title",), ("author", "editor", "organization", "institution"), ("year", "date"))
        missing = [group[0] for group in need if not any(entry.fields.get(f, "").strip() for f in group)]
        if entry.type not in ENTRY_TYPES:
            missing.insert(0, f"a known entry type (not @{entry.type})")
        if missing:
            self.add(
                "section",
                section.key,
                what="BibTeX entry incomplete",
                observed=f"@{entry.type}{{{entry.key}, ...}} lacks {', '.join(missing)}",
                expected="title, author and year",
                key=f"{section.key}.bibtex:{entry.key}",
                line=line,
                fix="add the missing fields to the entry",
            )
        for name, value in entry.fields.items():
            if strip_placeholders(value).strip() != value.strip():
                self.add(
                    "placeholder",
                    section.key,
                    what="placeholder in the BibTeX entry",
                    observed=f"{name} = {{{value}}}",
                    expected="the actual value",
                    key=f"{section.key}.bibtex:{entry.key}",
                    line=line,
                    fix=f"fill in the {name} field",
                )

    # placeholders and empty sections --------------------------------------------------------------

    def placeholders(self) -> None:
        hits: dict[tuple[str, str], list[tuple[int, str]]] = {}
        for i in range(self.doc.body_start, len(self.doc.lines)):
            if self.doc.code[i]:
                continue
            for p in PLACEHOLDERS:
                for m in p.pattern.finditer(self.doc.masked[i]):
                    hits.setdefault((self.card.heading_path(i), p.name), []).append((i, m.group(0).strip()))
        for line, comment in self.doc.comments:
            hits.setdefault((self.card.heading_path(line - 1), "HTML comment"), []).append(
                (line - 1, " ".join(comment.split())[:60])
            )
        for (where, name), found in sorted(hits.items(), key=lambda kv: kv[1][0][0]):
            first, text = found[0]
            more = f" and {len(found) - 1} more" if len(found) > 1 else ""
            is_comment = name == "HTML comment"
            self.add(
                "placeholder",
                self.section_key_of(first),
                what="leftover HTML comment" if is_comment else "placeholder text",
                observed=f"{text!r}{more} in {where!r}",
                expected=None if is_comment else "the actual content",
                key=where,
                line=first + 1,
                fix="delete the template comment" if is_comment else "write the content, or delete the field",
            )

    def empty(self) -> None:
        for b in self.doc.blocks:
            if b.level == 1:
                continue
            raw = self.doc.content(b)
            if b.is_heading:
                empty = not raw.strip()
            else:
                empty = not b.inline and not raw.strip()
            if empty:
                self.add(
                    "placeholder",
                    self.section_key_of(b.line - 1),
                    what="empty section" if b.is_heading else "empty field",
                    observed=f"{b.title!r} has nothing under it",
                    expected="content",
                    key=self.card.heading_path(b.line - 1),
                    line=b.line,
                    fix="write the content, or delete the heading",
                )

    def run(self) -> CardReport:
        self.front_matter()
        for section in SECTIONS:
            self.section(section)
        self.placeholders()
        self.empty()
        self.findings.sort(key=lambda f: f.problem.line or 0)
        return CardReport(self.card.path, {k: self.sections[k] for k in SECTION_KEYS}, self.findings)


def lint_card(card: ModelCard, *, today: dt.date | None = None) -> CardReport:
    """Lint a card on its own: front matter, required sections and their items, placeholders, BibTeX.

    Args:
        card: From ``read_card`` or ``parse_card``.
        today: For "release date in the future"; defaults to today's date.

    Example:
        >>> from vla_reference.card import parse_card
        >>> report = lint_card(parse_card("# M\\n## Citation\\nTBD\\n"))
        >>> report.sections["citation"], report.sections["training_data"]
        ('placeholder', 'missing')
    """
    today = today or dt.date.today()
    if today not in card._reports:  # a card is read once and linted by several checks
        card._reports[today] = _Linter(card, today).run()
    return card._reports[today]
