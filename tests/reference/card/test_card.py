"""The model-card linter on realistic cards: real structures pass, templates and placeholders fail."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from vla_reference.card import (
    SECTION_KEYS,
    find_card,
    lint_card,
    normalize_title,
    parse_card,
    parse_document,
    read_card,
)
from vla_reference.cli import main
from vla_reference.errors import MalformedFileError

CARDS = Path(__file__).parent / "cards"
TODAY = dt.date(2026, 11, 28)
ALL = set(SECTION_KEYS)

# card file -> (sections not present, with their status), number of findings or None for "some"
EXPECTED = {
    "llama3_style.md": ({}, 0),  # a complete real card: ## headings, bold run-in labels, HTML tables
    "chinese.md": ({}, 0),  # 一、模型基本信息 ... 六、如何引用, full-width colons
    "numbered.md": ({}, 0),  # "1. Model Details:" plain numbered headings, "- Direct use:" labels
    "chapter_bullets.md": ({}, 0),  # the chapter's own nested-bullet layout
    "llama2_style.md": ({"citation": "missing"}, 1),  # Meta's layout: # **Model Details**, no BibTeX
    "finetune_incomplete.md": ({k: "missing" for k in ALL}, 7),  # a Trainer-generated stub
    "hf_template.md": ({k: "placeholder" for k in ALL}, None),  # the Hub template, unfilled
    "chapter_template_placeholders.md": ({k: "placeholder" for k in ALL - {"evaluation"}}, None),
}


def lint(text: str):
    return lint_card(parse_card(text), today=TODAY)


@pytest.mark.parametrize("name", EXPECTED)
def test_cards(name):
    report = lint_card(read_card(CARDS / name), today=TODAY)
    not_present, count = EXPECTED[name]
    assert {k: v for k, v in report.sections.items() if v != "present"} == not_present
    if count is None:
        assert len(report.findings) > len(not_present)
    else:
        assert len(report.findings) == count, [f.problem.render() for f in report.findings]
    for f in report.findings:
        assert f.problem.fix, f  # every finding says what to do


def test_bold_headings_are_headings():
    """Meta's Llama 2 card: headings are bold (# **Intended Use**), labels are bold run-ins."""
    report = lint_card(read_card(CARDS / "llama2_style.md"), today=TODAY)
    assert [k for k, v in report.sections.items() if v == "present"] == [k for k in SECTION_KEYS if k != "citation"]


def test_template_placeholders_are_named_by_section():
    report = lint_card(read_card(CARDS / "hf_template.md"), today=TODAY)
    messages = [p.render() for p in report.of("placeholder", "intended_use")]
    assert any("'[More Information Needed]' in 'Uses > Out-of-Scope Use'" in m for m in messages), messages
    assert any(m.startswith("leftover HTML comment: '<!-- This section addresses misuse") for m in messages)
    assert report.sections["limitations"] == "placeholder"  # the template's default recommendation is no content


@pytest.mark.parametrize(
    ("title", "normalized"),
    [
        ("**Intended Use**", "intended use"),
        ("2. Out-of-Scope Use:", "out of scope use"),
        ("1.2 Direct Use", "direct use"),
        ("IV. Limitations", "limitations"),
        ("Citation [optional]", "citation"),
        ("二、预期用途", "预期用途"),
        ("（三）训练数据：", "训练数据"),
        ("第五章 伦理与安全考量", "伦理与安全考量"),
        ("📊 Evaluation Results", "evaluation results"),
        ("Bias, Risks, & Limitations", "bias risks and limitations"),
        ("<span style='x'>Cyber Security</span>", "cyber security"),
    ],
)
def test_heading_normalization(title, normalized):
    assert normalize_title(title) == normalized


@pytest.mark.parametrize(
    "heading",
    [
        "## Uses",
        "## Intended Use",
        "## Model Use",
        "### Intended uses & limitations",
        "# **Intended Use**",
        "**Intended Use**",
        "**2. Intended Use:**",
        "2. Intended Use:",
        "Intended Use\n------------",
        "<h2>Intended Use</h2>",
        "## 二、预期用途",
        "## 预期用途 (Intended Use)",
    ],
)
def test_intended_use_heading_synonyms(heading):
    report = lint(f"# M\n\n{heading}\n\nResearch on driving policies; must not be used to drive real cars.\n")
    assert report.sections["intended_use"] == "present", heading


def test_code_and_comments_are_not_structure():
    doc = parse_document("# M\n\n```bash\n# Training Data\n**Citation**\n```\n<!--\n## Evaluation\n-->\ntext\n")
    assert [b.title for b in doc.blocks] == ["M"]


def test_numbered_lists_stay_lists():
    doc = parse_document("# M\n\n1. Clone the repository\n2. Run the script\n")
    assert [b.title for b in doc.blocks] == ["M"]


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("[More Information Needed]", "[More Information Needed]"),
        ("TODO: describe", "TODO/TBD"),
        ("Released TBD.", "TODO/TBD"),
        ("Write to ai-safety@your-company.com.", "template domain"),
        ("See https://example.com/model for more.", "example domain"),
        ("<!-- Provide a summary -->", "HTML comment"),
        ("Lorem ipsum dolor sit amet.", "lorem ipsum"),
        ("数据来源：待补充", "待补充"),
    ],
)
def test_placeholders_are_flagged(text, name):
    report = lint(f"# M\n\n## Training Data\n\nA corpus of driving logs. {text}\n")
    found = report.of("placeholder")
    assert len(found) == 1, [p.render() for p in found]
    assert found[0].key == "Training Data" and found[0].line == 5


def test_placeholder_in_code_is_not_flagged():
    assert not lint("# M\n\n## Usage\n\n```python\n# TODO: nothing\nurl = 'https://example.com'\n```\n").of(
        "placeholder"
    )


def test_empty_sections_and_fields():
    report = lint("# M\n\n## Glossary\n\n## Model Details\n\n- **Contact:**\n- **License:** MIT\n")
    assert [(p.what, p.line) for p in report.of("placeholder")] == [("empty section", 3), ("empty field", 7)]


def test_front_matter():
    report = lint("---\nlicense: apache-2.0\nversion: 1.10\nrelease_date: 2024-10-26\n---\n# M\n")
    card = parse_card("---\nversion: 1.10\nrelease_date: 2024-10-26\n---\n")
    assert card.front_matter == {"version": "1.10", "release_date": "2024-10-26"}  # text as written
    assert not report.of("front_matter") and not report.of("license") and not report.of("release_date")
    bad = lint("---\nlicense: [apache-2.0\n---\n# M\n").of("front_matter")
    assert len(bad) == 1 and bad[0].what == "front matter unreadable" and bad[0].line == 2
    assert lint("---\nlicense: apache-2.0\n").of("front_matter")[0].observed.endswith("never closed")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("apache-2.0", []),
        ("Apache-2.0", []),
        ("llama3.1", []),
        ("Apache-2.0 OR MIT", []),
        ("LicenseRef-acme", []),
        ("apache2", ["unknown license identifier: 'apache2'"]),
        ("other", ["custom license not described"]),
    ],
)
def test_front_matter_license(value, expected):
    found = lint(f"---\nlicense: {value}\n---\n# M\n").of("license")
    assert [f"{p.what}: {p.observed}" if "unknown" in p.what else p.what for p in found] == expected


def test_front_matter_license_other_with_link_is_fine():
    assert not lint("---\nlicense: other\nlicense_name: acme\nlicense_link: LICENSE\n---\n# M\n").of("license")


@pytest.mark.parametrize(
    ("value", "what"),
    [
        ("2024/10/26", "release date not ISO 8601"),
        ("2099-01-01", "release date in the future"),
        ("2024-02-30", "release date not ISO 8601"),
    ],
)
def test_front_matter_dates(value, what):
    assert [p.what for p in lint(f"---\nrelease_date: {value}\n---\n# M\n").of("release_date")] == [what]


def test_bibtex_errors_name_the_line():
    report = lint("# M\n\n## Citation\n\n```bibtex\n@misc{key,\n  title = {T},\n  author {A},\n}\n```\n")
    (problem,) = report.of("section", "citation")
    assert problem.what == "BibTeX does not parse" and problem.line == 8
    assert problem.observed == "found '{', expected '=' after field 'author'"


def test_bibtex_needs_title_author_year():
    report = lint("# M\n\n## Citation\n\n@misc{key, title = {T}, note = {x}}\n")
    (problem,) = report.of("section", "citation")
    assert problem.observed == "@misc{key, ...} lacks author, year"


def test_find_card(tmp_path):
    (tmp_path / "model").mkdir()
    assert find_card(tmp_path) is None
    (tmp_path / "MODEL_CARD.md").write_text("# M\n")
    assert find_card(tmp_path) == tmp_path / "MODEL_CARD.md"
    (tmp_path / "model" / "README.md").write_text("# M\n")
    assert find_card(tmp_path) == tmp_path / "model" / "README.md"


def test_unreadable_card(tmp_path):
    (tmp_path / "README.md").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(MalformedFileError, match=r"cannot read the model card: .*README.md.*Fix: save it as UTF-8"):
        read_card(tmp_path / "README.md")


def test_cli_card(capsys):
    assert main(["card", str(CARDS / "llama3_style.md")]) == 0
    assert capsys.readouterr().out.rstrip().endswith("no findings")
    assert main(["card", str(CARDS / "llama2_style.md")]) == 1
    out = capsys.readouterr().out
    assert "citation missing" in out and "Fix: add a '## Citation' section with a BibTeX entry" in out
    assert main(["card", "--json", str(CARDS / "hf_template.md")]) == 1
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"sections", "findings"}
    assert data["sections"] == {k: "placeholder" for k in SECTION_KEYS}
    assert list(data["sections"]) == list(SECTION_KEYS)
    assert all({"section", "line", "message", "fix"} <= set(f) for f in data["findings"])


@pytest.mark.parametrize("content", ["TODO: fill in after review", "TBD - to be written by the safety team", "FIXME"])
def test_cli_card_json_summary_agrees_with_its_findings(content, capsys, tmp_path):
    """A section whose whole content is a placeholder is ``placeholder`` in the summary, as its
    finding says, not ``present``."""
    golden = Path(__file__).parents[3] / "golden" / "dense" / "model" / "README.md"
    text = golden.read_text()
    start, end = text.index("## Intended Use"), text.index("## Training Data")
    (tmp_path / "README.md").write_text(text[:start] + f"## Intended Use\n\n{content}\n\n" + text[end:])
    assert main(["card", "--json", str(tmp_path / "README.md")]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["sections"] == {k: "placeholder" if k == "intended_use" else "present" for k in SECTION_KEYS}
    flagged = {f["section"] for f in data["findings"] if "holds only placeholders" in f["message"]}
    assert flagged == {"intended_use"}, data["findings"]


def test_cli_card_against_a_release(capsys):
    golden = Path(__file__).parents[3] / "golden" / "dense"
    assert main(["card", str(golden / "model" / "README.md"), "--release", str(golden)]) == 0
    assert main(["card", str(CARDS / "chinese.md"), "--release", str(golden)]) == 1
    out = capsys.readouterr().out
    assert "card version differs from release.json: 1.2.0 in front matter:version" in out
    assert "stated context length differs from config.json: '8192'" in out


def test_cli_card_errors(tmp_path, capsys):
    assert main(["card", str(tmp_path)]) == 1
    assert "no model card" in capsys.readouterr().err
    assert main(["card"]) == 2
