"""The model card: its model and parser, the lint rules, the release cross-checks, Markdown,
BibTeX and license readers.
"""

from ._bibtex import BibTeXError, find_entries, parse_bibtex
from ._card import CARD_NAMES, CardFinding, CardReport, ModelCard, find_card, parse_card, read_card
from ._licenses import LICENSES, identify_text, license_files, lookup, parse_expression, suggest
from ._lint import lint_card
from ._markdown import normalize_title, parse_document, title_variants
from ._release import (
    check_against_release,
    check_context_length,
    check_license,
    check_limitation_topics,
    check_parameters,
    check_release_date,
    check_version,
    config_context_length,
    parse_context_length,
    parse_count,
    restate_card_version,
    restate_version,
    statements,
)
from ._rules import FACTS, LIMITATION_TOPICS, PLACEHOLDER_PATTERN, PLACEHOLDERS, SECTION_KEYS, SECTIONS, ItemKind

__all__ = [
    "BibTeXError",
    "find_entries",
    "parse_bibtex",
    "CARD_NAMES",
    "CardFinding",
    "CardReport",
    "ModelCard",
    "find_card",
    "lint_card",
    "parse_card",
    "read_card",
    "LICENSES",
    "identify_text",
    "license_files",
    "lookup",
    "parse_expression",
    "suggest",
    "normalize_title",
    "parse_document",
    "title_variants",
    "check_against_release",
    "check_context_length",
    "check_license",
    "check_limitation_topics",
    "check_parameters",
    "check_release_date",
    "check_version",
    "config_context_length",
    "parse_context_length",
    "parse_count",
    "restate_card_version",
    "restate_version",
    "statements",
    "FACTS",
    "LIMITATION_TOPICS",
    "PLACEHOLDER_PATTERN",
    "PLACEHOLDERS",
    "SECTION_KEYS",
    "SECTIONS",
    "ItemKind",
]
