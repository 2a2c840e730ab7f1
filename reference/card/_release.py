"""The model card against the release it describes.

What the card states (in its front matter, its labels and key/value table rows) must agree with
the release: the version with ``release.json``'s, the license with a LICENSE file, the release
date with ``release.json``'s (ISO, not in the future), the parameter count with the weights
(within 5%), the context length with ``config.json``. A VLA release's limitations must also
cover the chapter's four topics (factuality, robustness, bias, causal reasoning).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from .._fs import read_json
from ..findings import Finding
from ..release._manifest import read_manifest
from ..release._tensor_hashes import count_parameters
from ._card import CardFinding, ModelCard, parse_date, section_blocks, strip_placeholders
from ._licenses import License, identify_text, license_files, parse_expression
from ._markdown import PLAIN_LABEL, table_rows, title_variants
from ._rules import FACTS, LIMITATION_TOPICS, SECTION_KEYS

__all__ = [
    "Statement",
    "statements",
    "parse_count",
    "parse_context_length",
    "config_context_length",
    "check_version",
    "restate_version",
    "restate_card_version",
    "check_release_date",
    "check_license",
    "check_parameters",
    "check_context_length",
    "check_limitation_topics",
    "check_against_release",
    "PARAMETER_TOLERANCE",
    "CONTEXT_KEYS",
]

PARAMETER_TOLERANCE: Final = 0.05
# config.json keys for the context length, in the order transformers' families use them
CONTEXT_KEYS: Final = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")
_NESTED: Final = ("text_config", "llm_config", "language_config")
_SEMVER_TOKEN: Final = re.compile(r"(?<![\w.])v?(\d+\.\d+(?:\.\d+)?(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?)(?![\w])")
_UNITS: Final = {
    "k": 10**3,
    "thousand": 10**3,
    "m": 10**6,
    "mn": 10**6,
    "million": 10**6,
    "b": 10**9,
    "bn": 10**9,
    "billion": 10**9,
    "t": 10**12,
    "trillion": 10**12,
    "万": 10**4,
    "亿": 10**8,
}
_COUNT: Final = re.compile(
    r"(\d+(?:[,_]\d{3})*(?:\.\d+)?)\s*(thousand|million|billion|trillion|mn|bn|[kmbt]|万|亿)?(?![a-z])", re.I
)


@dataclass(frozen=True)
class Statement:
    """A value the card states: the text, the line (None for front matter) and where it was."""

    value: str
    line: int | None
    source: str  # "front matter:<key>", "label '<title>'", "table row '<cell>'", "title"

    @property
    def in_front_matter(self) -> bool:
        return self.source.startswith("front matter")


def statements(card: ModelCard, fact: str, *, headings: bool = True) -> list[Statement]:
    """Everything the card says about one fact of ``card_rules.FACTS``, front matter first.

    With ``headings=False`` only labels count (a "Framework versions" heading states no version).
    """
    rule = FACTS[fact]
    out: list[Statement] = []
    fm = card.front_matter
    for key in rule.front_matter:
        value = fm.get(key)
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, (str, int, float)) and str(v).strip():
                out.append(Statement(str(v).strip(), None, f"front matter:{key}"))
    doc = card.doc
    for b in card.blocks_named(rule.labels):
        if b.level == 1 or (not headings and b.level < PLAIN_LABEL):
            continue
        value = b.inline
        if not value:
            first = next((doc.masked[i] for i in range(b.start, b.end) if doc.masked[i].strip()), "")
            value = first.strip()
        if strip_placeholders(value).strip():
            out.append(Statement(value, b.line, f"label {b.title!r}"))
    for row in table_rows("\n".join(doc.masked)):
        if len(row) >= 2 and row[0] and rule.labels.match(title_variants(row[0])) and row[1].strip():
            out.append(Statement(row[1].strip(), None, f"table row {row[0]!r}"))
    return out


def parse_count(text: str) -> int | None:
    """A parameter count as people write it: ``218304``, ``218,304``, ``7B``, ``6.74 billion``, ``70亿``."""
    m = _COUNT.search(text)
    if m is None:
        return None
    number = float(m.group(1).replace(",", "").replace("_", ""))
    unit = (m.group(2) or "").lower()
    return round(number * _UNITS.get(unit, 1))


def parse_context_length(text: str) -> set[int]:
    """The lengths a context statement can mean: ``4096`` -> {4096}, ``4k`` -> {4000, 4096}."""
    m = re.search(r"(\d+(?:[,_]\d{3})*(?:\.\d+)?)\s*([kK])?(?![a-zA-Z])", text)
    if m is None:
        return set()
    number = float(m.group(1).replace(",", "").replace("_", ""))
    if m.group(2):
        return {round(number * 1000), round(number * 1024)}
    return {round(number)}


def config_context_length(config: Mapping[str, Any]) -> tuple[str, int] | None:
    """(key, value) of the context length in a config.json (top level, then text/LLM sub-configs)."""
    for scope, prefix in [(config, "")] + [(config[n], f"{n}.") for n in _NESTED if isinstance(config.get(n), Mapping)]:
        for key in CONTEXT_KEYS:
            value = scope.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                return prefix + key, value
    return None


def _where(s: Statement) -> str:
    return s.source + (f" (line {s.line})" if s.line else "")


def _stated_versions(card: ModelCard) -> list[tuple[str, Statement]]:
    """Every version the card states, with where: front matter, labels, table rows, title."""
    found: list[tuple[str, Statement]] = []
    for s in statements(card, "version", headings=False):
        if s.in_front_matter:
            found.append((s.value.removeprefix("v"), s))
        else:
            found.extend((m.group(1), s) for m in _SEMVER_TOKEN.finditer(s.value))
    title = card.doc.title
    if title is not None:
        found.extend(
            (m.group(1), Statement(title.title, title.line, "title")) for m in _SEMVER_TOKEN.finditer(title.title)
        )
    return found


def restate_version(text: str, version: str) -> str:
    r"""The card text with every version it states (where :func:`check_version` reads them) set to
    ``version``; the rest of the text is kept byte for byte. ``vla-release manifest --version``
    uses it, so that one command bumps the release and its card together.

    >>> card = "---\nversion: 1.0.0\n---\n\n# Model v1.0.0\n\nTrained since v0.9.\n"
    >>> print(restate_version(card, "1.1.0"), end="")
    ---
    version: 1.1.0
    ---
    <BLANKLINE>
    # Model v1.1.0
    <BLANKLINE>
    Trained since v0.9.
    """
    from ._card import parse_card

    found = _stated_versions(parse_card(text, Path("README.md")))
    lines = text.splitlines(keepends=True)
    fm_end = (
        next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), 0)
        if lines and lines[0].strip() == "---"
        else 0
    )
    for old, s in found:
        if old == version:
            continue
        if s.in_front_matter:
            where = [i for i in range(1, fm_end) if re.match(r"\s*version\s*:", lines[i])]
        elif s.line is not None:
            where = [s.line - 1]
        else:  # a table row: the line that holds its cell
            where = [i for i, line in enumerate(lines) if line.lstrip().startswith("|") and s.value in line]
        token = re.compile(rf"(?<![\w.])(v?){re.escape(old)}(?![\w.]*\d)")
        for i in where:
            if 0 <= i < len(lines):
                lines[i] = token.sub(lambda m: m.group(1) + version, lines[i])
    return "".join(lines)


def restate_card_version(root: Path, version: str, log: Callable[[str], None] = lambda _: None) -> Path | None:
    """Write ``version`` where the card of the release ``root`` states a version (see
    :func:`restate_version`); returns the card's path if it changed. A card that cannot be read
    is left as it is, and said so through ``log``."""
    from .._fs import atomic_write_bytes, read_text
    from ..errors import ReleaseError
    from ._card import MAX_CARD_BYTES, find_card

    path = find_card(root)
    if path is None:
        return None
    try:
        text = read_text(path, max_bytes=MAX_CARD_BYTES, what="model card")
    except ReleaseError as e:
        log(f"{path}: not restating the version: {e}")
        return None
    new = restate_version(text, version)
    if new == text:
        return None
    atomic_write_bytes(path, new.encode())
    log(f"restated version {version} in {path}")
    return path


def check_version(card: ModelCard, version: str) -> list[Finding]:
    """Every version the card states (front matter, labels, title) equals ``release.json``'s."""
    found = _stated_versions(card)
    if not found:
        return [
            Finding(
                "card states no version",
                "no 'version:' in the front matter, no version label, no vX.Y.Z in the title",
                version,
                path=card.path,
                key="basic_information.version",
                fix=f"add 'version: {version}' to the front matter and '- **Name and version:** <name> v{version}'",
            )
        ]
    return [
        Finding(
            "card version differs from release.json",
            f"{v} in {_where(s)}",
            f"{version} (release.json)",
            path=card.path,
            key="basic_information.version",
            line=s.line,
            fix=f"in the release: `vla-release manifest . --version {version}` (writes it where the card states a "
            "version), or correct release.json's version",
        )
        for v, s in found
        if v != version
    ]


def check_release_date(card: ModelCard, release_date: str | None, *, today: dt.date | None = None) -> list[Finding]:
    """The card's release dates are ISO, not in the future, and equal ``release.json``'s ``date``.

    Front-matter dates are checked for format by ``lint_card``; here only against release.json.
    """
    today = today or dt.date.today()
    found = statements(card, "release_date")
    if not found:
        return [
            Finding(
                "card states no release date",
                "no 'release_date:' in the front matter and no 'Release date' label",
                release_date or "YYYY-MM-DD",
                path=card.path,
                key="basic_information.release_date",
                fix=f"add 'release_date: {release_date or today.isoformat()}' and a '- **Release date:**' line",
            )
        ]
    out = []
    for s in found:
        iso = re.fullmatch(r"\d{4}-\d{2}-\d{2}", s.value.strip()) is not None
        date = parse_date(s.value) if iso or not s.in_front_matter else None
        if not s.in_front_matter and not iso:
            m = re.search(r"\d{4}-\d{2}-\d{2}", s.value)
            if m is None:
                out.append(
                    Finding(
                        "release date not ISO 8601",
                        f"{s.value!r} in {_where(s)}",
                        "YYYY-MM-DD",
                        path=card.path,
                        key="basic_information.release_date",
                        line=s.line,
                        fix=f"write the date as YYYY-MM-DD{f' ({release_date})' if release_date else ''}",
                    )
                )
                continue
            date = parse_date(m.group(0))
        if date is None:
            continue
        if not s.in_front_matter and date > today:
            out.append(
                Finding(
                    "release date in the future",
                    f"{date.isoformat()} in {_where(s)}",
                    f"on or before {today.isoformat()}",
                    path=card.path,
                    key="basic_information.release_date",
                    line=s.line,
                    fix="correct the release date",
                )
            )
        if release_date and parse_date(release_date) is not None and date != parse_date(release_date):
            out.append(
                Finding(
                    "card release date differs from release.json",
                    f"{date.isoformat()} in {_where(s)}",
                    f"{release_date} (release.json)",
                    path=card.path,
                    key="basic_information.release_date",
                    line=s.line,
                    fix="write the same date in the card and in release.json's 'date'",
                )
            )
    return out


def _label_license(text: str) -> list[License] | None:
    """The licenses a label's prose names ('Apache-2.0', 'MIT (see LICENSE)'), or None."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text).strip().strip("*_`")
    candidates = [text, text.split("(")[0], *(" ".join(text.split()[:n]) for n in (3, 2, 1))]
    for c in candidates:
        c = c.strip().rstrip(".,;:")
        if not c:
            continue
        found, unknown = parse_expression(c)
        if found and not unknown:
            return found
    return None


def check_license(card: ModelCard, license_files: Sequence[Path]) -> list[Finding]:
    """The card states its license as an SPDX identifier, consistently, and a LICENSE file holds it.

    Unknown front-matter identifiers are reported by ``lint_card``.
    """
    found = statements(card, "license")
    key = "basic_information.license"
    if not found:
        return [
            Finding(
                "card states no license",
                "no 'license:' in the front matter and no 'License' label",
                "an SPDX identifier",
                path=card.path,
                key=key,
                fix="add 'license: apache-2.0' (or the release's license) to the front matter",
            )
        ]
    out: list[Finding] = []
    declared: list[tuple[License, Statement]] = []
    for s in found:
        if s.in_front_matter:
            if s.value.strip().lower() == "other":
                continue
            declared.extend((lic, s) for lic in parse_expression(s.value)[0])
        else:
            named = _label_license(s.value)
            if named is not None:
                declared.extend((lic, s) for lic in named)
    if not declared and not any(s.in_front_matter for s in found):
        s = found[0]
        out.append(
            Finding(
                "license not given as an SPDX identifier",
                f"{s.value[:80]!r} in {_where(s)}",
                "an SPDX identifier such as Apache-2.0",
                path=card.path,
                key=key,
                line=s.line,
                fix="add 'license: <spdx-id>' to the front matter (license: other with license_link for a custom one)",
            )
        )
    names = {lic.name for lic, _ in declared}
    if len(names) > 1 and not any("OR" in s.value or "AND" in s.value for s in found):
        first = declared[0]
        for lic, s in declared[1:]:
            if lic.name != first[0].name:
                out.append(
                    Finding(
                        "card states two licenses",
                        f"{lic.name} in {_where(s)}",
                        f"{first[0].name} as in {_where(first[1])}",
                        path=card.path,
                        key=key,
                        line=s.line,
                        fix="state one license (or an SPDX expression: A OR B) everywhere in the card",
                    )
                )
    stated = {lic.name: lic for lic, _ in declared}
    for f in license_files:
        try:
            text = f.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        held = identify_text(text)
        if held is not None and stated and held.name not in stated:
            out.append(
                Finding(
                    "LICENSE file does not match the card",
                    f"{f.name} holds {held.name}",
                    f"{' or '.join(stated)} as the card states",
                    path=f,
                    key="license",
                    fix=f"ship the {' / '.join(stated)} text in {f.name}, or correct the card's license",
                )
            )
        elif held is None:
            for lic in stated.values():
                if lic.phrases:
                    out.append(
                        Finding(
                            "LICENSE file does not match the card",
                            f"{f.name} is not recognisably {lic.name} (lacks {lic.phrases[0]!r})",
                            f"the {lic.name} text as the card states",
                            path=f,
                            key="license",
                            fix=f"ship the full {lic.name} text in {f.name}, or correct the card's license",
                        )
                    )
    return out


def check_parameters(card: ModelCard, actual: int) -> list[Finding]:
    """Every parameter count the card states is within 5% of the weights' element count."""
    out = []
    for s in statements(card, "parameters"):
        stated = parse_count(s.value)
        if stated is None:
            if s.in_front_matter:
                out.append(
                    Finding(
                        "parameter count unreadable",
                        f"{s.value!r} in {_where(s)}",
                        "a number such as 218304, 7B or 6.74 billion",
                        path=card.path,
                        key="basic_information.parameters",
                        fix=f"write {actual}",
                    )
                )
            continue
        if abs(stated - actual) > PARAMETER_TOLERANCE * actual:
            out.append(
                Finding(
                    "stated parameter count differs from the weights",
                    f"{s.value!r} = {stated:,} in {_where(s)} ({(stated - actual) / actual:+.1%})",
                    f"{actual:,} ± {PARAMETER_TOLERANCE:.0%} (elements of model/*.safetensors)",
                    path=card.path,
                    key="basic_information.parameters",
                    line=s.line,
                    fix=f"state {actual:,} ({actual / 1e9:.2f}B)" if actual >= 10**8 else f"state {actual:,}",
                )
            )
    return out


def check_context_length(card: ModelCard, actual: tuple[str, int] | None) -> list[Finding]:
    """Every context length the card states equals config.json's (``4k`` may mean 4000 or 4096)."""
    out = []
    for s in statements(card, "context_length"):
        if actual is None:
            out.append(
                Finding(
                    "config.json states no context length",
                    f"the card states {s.value!r} in {_where(s)}",
                    f"one of {', '.join(CONTEXT_KEYS)} in config.json",
                    path=card.path,
                    key="basic_information.context_length",
                    line=s.line,
                    fix="add max_position_embeddings to config.json",
                )
            )
            continue
        config_key, value = actual
        meant = parse_context_length(s.value)
        if value not in meant:
            out.append(
                Finding(
                    "stated context length differs from config.json",
                    f"{s.value!r} in {_where(s)}",
                    f"{value} (config.json {config_key})",
                    path=card.path,
                    key="basic_information.context_length",
                    line=s.line,
                    fix=f"state {value} tokens",
                )
            )
    return out


def check_limitation_topics(card: ModelCard) -> list[Finding]:
    """The limitations (or the ethics section beside them) discuss each of the chapter's four topics.

    A card without a limitations section is reported by the section check, not here.
    """
    held = section_blocks(card)
    blocks = held["limitations"]
    if not blocks:
        return []
    text = card.text(blocks + held["ethical_considerations"])
    first = min(b.line for b in blocks)
    return [
        Finding(
            f"limitations do not discuss {t.title}",
            f"nothing about {t.title} under {blocks[0].title!r}",
            f"a '**{t.title.capitalize()}:**' item",
            path=card.path,
            key=f"limitations.{t.key}",
            line=first,
            fix=t.fix,
        )
        for t in LIMITATION_TOPICS
        if not t.keywords.search(text)
    ]


def check_against_release(card: ModelCard, root: Path, *, today: dt.date | None = None) -> list[CardFinding]:
    """Every cross-check of this module against the release at ``root`` (for the CLI's ``--release``).

    Raises ReleaseError when release.json, config.json or the weights cannot be read.
    """

    def tag(check: str, problems: Iterable[Finding]) -> list[CardFinding]:
        out = []
        for p in problems:
            head = (p.key or "").split(".")[0]
            out.append(CardFinding(check, head if head in SECTION_KEYS else "basic_information", p))
        return out

    out: list[CardFinding] = []
    manifest = read_manifest(root)
    if manifest.get("version"):
        out += tag("version", check_version(card, str(manifest["version"])))
    date = manifest.get("date")
    out += tag("release_date", check_release_date(card, str(date) if date else None, today=today))
    out += tag("license", check_license(card, license_files(root, root / "model")))
    out += tag("parameters", check_parameters(card, count_parameters(root / "model")))
    out += tag(
        "context_length", check_context_length(card, config_context_length(read_json(root / "model" / "config.json")))
    )
    out += tag("limitations", check_limitation_topics(card))
    return out
