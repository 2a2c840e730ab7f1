"""The card against its release: version, date, license, parameter count, context length, limitation topics."""

from __future__ import annotations

import datetime as dt

import pytest

from vla_reference.card import (
    check_context_length,
    check_license,
    check_limitation_topics,
    check_parameters,
    check_release_date,
    check_version,
    config_context_length,
    parse_card,
    parse_context_length,
    parse_count,
    statements,
)

TODAY = dt.date(2026, 11, 28)


def card(front: str = "", body: str = ""):
    text = (f"---\n{front}---\n" if front else "") + "# M\n\n## Model Details\n\n" + body
    return parse_card(text)


def test_statements_from_front_matter_labels_and_tables():
    c = card("license: mit\n", "- **License:** MIT\n\n| Field | Value |\n|---|---|\n| License | MIT |\n")
    assert [(s.value, s.source) for s in statements(c, "license")] == [
        ("mit", "front matter:license"),
        ("MIT", "label 'License'"),
        ("MIT", "table row 'License'"),
    ]


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("218304", 218304),
        ("218,304 (0.22M)", 218304),
        ("7B", 7 * 10**9),
        ("6.74 billion", 6_740_000_000),
        ("10.4B parameters", 10_400_000_000),
        ("70亿", 7_000_000_000),
        ("about 1.2M", 1_200_000),
        ("n/a", None),
    ],
)
def test_parse_count(text, count):
    assert parse_count(text) == count


@pytest.mark.parametrize(
    ("text", "lengths"), [("4096", {4096}), ("8,192 tokens", {8192}), ("4k", {4000, 4096}), ("128K", {128000, 131072})]
)
def test_parse_context_length(text, lengths):
    assert parse_context_length(text) == lengths


def test_config_context_length():
    assert config_context_length({"max_position_embeddings": 256}) == ("max_position_embeddings", 256)
    assert config_context_length({"n_positions": 1024}) == ("n_positions", 1024)
    assert config_context_length({"text_config": {"max_position_embeddings": 8}}) == (
        "text_config.max_position_embeddings",
        8,
    )
    assert config_context_length({}) is None


def test_version():
    good = card("version: 1.2.0\n", "- **Name and version:** VLA v1.2.0\n")
    assert check_version(good, "1.2.0") == []
    (p,) = check_version(card("", "- **Name and version:** VLA v1.1.0\n"), "1.2.0")
    assert (p.observed, p.expected, p.line) == ("1.1.0 in label 'Name and version' (line 5)", "1.2.0 (release.json)", 5)
    (p,) = check_version(card(), "1.2.0")
    assert p.what == "card states no version" and "version: 1.2.0" in p.fix
    # a "Framework versions" heading states no version of the model
    assert check_version(card("version: 1.2.0\n", "## Framework versions\n\n- Transformers 4.41.2\n"), "1.2.0") == []


def test_release_date():
    assert (
        check_release_date(
            card("release_date: 2026-11-01\n", "- **Release date:** 2026-11-01\n"), "2026-11-01", today=TODAY
        )
        == []
    )
    problems = check_release_date(card("", "- **Release date:** October 26, 2024\n"), "2026-11-01", today=TODAY)
    assert [p.what for p in problems] == ["release date not ISO 8601"]
    problems = check_release_date(card("", "- **Release date:** 2027-01-01\n"), "2026-11-01", today=TODAY)
    assert [p.what for p in problems] == ["release date in the future", "card release date differs from release.json"]
    assert check_release_date(card(), None, today=TODAY)[0].what == "card states no release date"


def test_license(tmp_path):
    apache = tmp_path / "LICENSE"
    apache.write_text("Apache License\nVersion 2.0, January 2004\n")
    assert check_license(card("license: apache-2.0\n", "- **License:** Apache 2.0\n"), [apache]) == []
    (p,) = check_license(card("license: mit\n"), [apache])
    assert (p.what, p.observed) == ("LICENSE file does not match the card", "LICENSE holds Apache-2.0")
    custom = tmp_path / "LICENCE"
    custom.write_text("Our own terms.\n")
    (p,) = check_license(card("license: apache-2.0\n"), [custom])
    assert p.observed == "LICENCE is not recognisably Apache-2.0 (lacks 'apache license')"
    (p,) = check_license(card("license: apache-2.0\n", "- **License:** MIT\n"), [])
    assert p.what == "card states two licenses"
    (p,) = check_license(card("", "- **License:** a custom commercial license\n"), [])
    assert p.what == "license not given as an SPDX identifier"
    assert check_license(card(), [])[0].what == "card states no license"


def test_parameters():
    assert check_parameters(card("parameters: 7B\n"), 6_738_415_616) == []  # 3.9% off: within 5%
    (p,) = check_parameters(card("", "- **Parameters:** 13B\n"), 6_738_415_616)
    assert p.what == "stated parameter count differs from the weights" and "(+92.9%)" in p.observed
    (p,) = check_parameters(card("parameters: many\n"), 10)
    assert p.what == "parameter count unreadable"
    assert check_parameters(card(), 10) == []  # nothing stated, nothing to check


def test_context_length():
    assert check_context_length(card("context_length: 4k\n"), ("max_position_embeddings", 4096)) == []
    (p,) = check_context_length(card("", "- **Context length:** 2048 tokens\n"), ("max_position_embeddings", 4096))
    assert p.expected == "4096 (config.json max_position_embeddings)" and p.line == 5
    (p,) = check_context_length(card("context_length: 4096\n"), None)
    assert p.what == "config.json states no context length"


def test_limitation_topics():
    text = "# M\n\n## Limitations\n\nMay hallucinate; degrades in rare scenes; regional bias.\n"
    (p,) = check_limitation_topics(parse_card(text))
    assert p.what == "limitations do not discuss causal reasoning" and p.key == "limitations.causal_reasoning"
    zh = (
        "# M\n\n## 局限性\n\n- 事实性：会产生幻觉。\n- 鲁棒性：罕见场景下性能下降。\n"
        "- 偏见：数据来自北美。\n- 因果推理：只学到相关性。\n"
    )
    assert check_limitation_topics(parse_card(zh)) == []
    assert check_limitation_topics(parse_card("# M\n")) == []  # no section: the section check reports it
