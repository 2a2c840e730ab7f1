"""Model card conformance: the card is complete, free of placeholders, and true to the release."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from pytest_vla.findings import Findings
from pytest_vla.rules import rule
from vla_reference import read_json
from vla_reference.card import (
    CARD_NAMES,
    SECTION_KEYS,
    ModelCard,
    check_context_length,
    check_license,
    check_limitation_topics,
    check_parameters,
    check_release_date,
    check_version,
    config_context_length,
    find_card,
    license_files,
    lint_card,
    read_card,
)
from vla_reference.errors import ReleaseError
from vla_reference.findings import Finding
from vla_reference.release import Release, count_parameters

pytestmark = pytest.mark.card


def _report(findings: Findings, problems: Iterable[Finding]) -> None:
    __tracebackhide__ = True
    findings.extend(problems)
    findings.check()


@rule("VLA-CARD-001", fix="ship model/README.md with valid YAML front matter")
def test_card_present(vla_release: Release) -> None:
    """The release has a model card (model/README.md or MODEL_CARD.md), UTF-8, with valid YAML front matter."""
    findings = Findings("model card", vla_release.root)
    path = find_card(vla_release.root)
    if path is None:
        findings.add(
            "model card missing",
            f"none of {', '.join(f'model/{n}' for n in CARD_NAMES)}, MODEL_CARD.md",
            "model/README.md",
            file=vla_release.root / "model",
            fix="write the model card as model/README.md (YAML front matter + Markdown sections)",
        )
        findings.check()
        return
    try:
        card = read_card(path)
    except ReleaseError as e:
        findings.fail_on(e, "model card unreadable")
    _report(findings, lint_card(card).of("front_matter"))


@rule("VLA-CARD-002", fix="write the section the message names, with every item the chapter lists")
@pytest.mark.parametrize("section", SECTION_KEYS)
def test_card_section(section: str, vla_release: Release, vla_card: ModelCard) -> None:
    """The card has this section, written (not placeholders), with everything the chapter lists in it."""
    report = lint_card(vla_card)
    _report(Findings(f"model card: {section}", vla_release.root), report.of("section", section))


@rule("VLA-CARD-003", fix="replace the template text the message quotes")
def test_card_has_no_placeholders(vla_release: Release, vla_card: ModelCard) -> None:
    """No template text is left: [More Information Needed], TODO/TBD, example domains, HTML comments, empty sections."""
    _report(Findings("model card placeholders", vla_release.root), lint_card(vla_card).of("placeholder"))


@rule("VLA-CARD-004", fix="discuss factuality, robustness, bias and causal reasoning under Limitations")
def test_card_limitations_cover_the_chapter_topics(vla_release: Release, vla_card: ModelCard) -> None:
    """The limitations discuss factuality, robustness, bias and causal reasoning (chapter 24.5)."""
    _report(Findings("model card limitations", vla_release.root), check_limitation_topics(vla_card))


@rule("VLA-CARD-005", fix="state one SPDX license, the same in the front matter, the card and LICENSE")
def test_card_license(vla_release: Release, vla_card: ModelCard) -> None:
    """The license is a valid SPDX identifier, stated consistently, and matches a LICENSE file if there is one."""
    problems = lint_card(vla_card).of("license")
    problems += check_license(vla_card, license_files(vla_release.root, vla_release.root / "model"))
    _report(Findings("model card license", vla_release.root), problems)


@rule("VLA-CARD-006", fix="state release.json's version in the card")
def test_card_version_matches_release(vla_release: Release, vla_card: ModelCard, vla_manifest: dict[str, Any]) -> None:
    """The version the card states is release.json's version."""
    findings = Findings("model card version", vla_release.root)
    version = str(vla_manifest.get("version") or "")
    if not version:
        # Why skip: a missing version already fails test_version_is_strict_semver; one defect, one failure.
        pytest.skip("release.json states no version (reported by test_version_is_strict_semver)")
    _report(findings, check_version(vla_card, version))


@rule("VLA-CARD-007", fix="state release.json's date in ISO 8601")
def test_card_release_date(vla_release: Release, vla_card: ModelCard, vla_manifest: dict[str, Any]) -> None:
    """The release date is ISO 8601, not in the future, and release.json's date."""
    findings = Findings("model card release date", vla_release.root)
    date = vla_manifest.get("date")
    problems = lint_card(vla_card).of("release_date")
    problems += check_release_date(vla_card, str(date) if date else None, today=dt.date.today())
    _report(findings, problems)


@rule("VLA-CARD-008", fix="state the parameter count of the shipped weights")
def test_card_parameter_count(vla_release: Release, vla_card: ModelCard, vla_model_dir: Path) -> None:
    """A parameter count stated in the card is within 5% of the shipped weights."""
    findings = Findings("model card parameter count", vla_release.root)
    try:
        actual = count_parameters(vla_model_dir)
    except ReleaseError as e:
        findings.fail_on(e, "weights unreadable")
    _report(findings, check_parameters(vla_card, actual))


@rule("VLA-CARD-009", fix="state config.json's context length")
def test_card_context_length(vla_release: Release, vla_card: ModelCard, vla_model_dir: Path) -> None:
    """A context length stated in the card is config.json's."""
    findings = Findings("model card context length", vla_release.root)
    try:
        config = read_json(vla_model_dir / "config.json")
    except ReleaseError as e:
        findings.fail_on(e, "config.json unreadable")
    _report(findings, check_context_length(vla_card, config_context_length(config)))
