"""The card tables: keys unique, every section and item recognisable, placeholders distinct."""

from __future__ import annotations

import re

import pytest

from vla_reference.card import (
    FACTS,
    LIMITATION_TOPICS,
    PLACEHOLDER_PATTERN,
    PLACEHOLDERS,
    SECTION_KEYS,
    SECTIONS,
    ItemKind,
    title_variants,
)


def test_the_seven_sections_of_the_cli_contract():
    assert SECTION_KEYS == (
        "basic_information",
        "intended_use",
        "training_data",
        "evaluation",
        "limitations",
        "ethical_considerations",
        "citation",
    )


def test_keys_unique():
    assert len(set(SECTION_KEYS)) == len(SECTIONS)
    for s in SECTIONS:
        assert len({i.key for i in s.items}) == len(s.items), s.key
    assert len({p.name for p in PLACEHOLDERS}) == len(PLACEHOLDERS)
    assert len({t.key for t in LIMITATION_TOPICS}) == 4


def test_no_two_sections_claim_the_same_exact_title():
    seen: dict[str, str] = {}
    for s in SECTIONS:
        for title in s.synonyms.exact:
            assert title not in seen, f"{title!r} in {seen.get(title)} and {s.key}"
            seen[title] = s.key


@pytest.mark.parametrize("section", SECTIONS, ids=lambda s: s.key)
def test_the_suggested_heading_is_recognised(section):
    assert section.synonyms.match(title_variants(section.heading.lstrip("# ")))


@pytest.mark.parametrize(
    ("item", "title"),
    [(i, i.title) for s in SECTIONS for i in s.items if i.kind is ItemKind.TEXT],
    ids=lambda x: x if isinstance(x, str) else x.key,
)
def test_every_text_item_is_recognised_by_its_own_title(item, title):
    assert item.labels.match(title_variants(title)) or item.keyword_pattern.search(title)


@pytest.mark.parametrize("fact", FACTS.values(), ids=lambda f: f.key)
def test_every_fact_is_recognised_by_its_title(fact):
    assert fact.labels.match(title_variants(fact.title))


def test_combined_placeholder_pattern_finds_what_each_does():
    samples = {
        "[More Information Needed]": "x [More Information Needed] y",
        "TODO/TBD": "x TBD y",
        "to be determined": "x to be determined y",
        "template domain": "x ai@your-company.com y",
        "example domain": "x https://example.org/a y",
        "bracketed instruction": "x [Insert citation here] y",
        "lorem ipsum": "Lorem ipsum",
        "template title": "Model Card for Model ID",
        "Hub template boilerplate": "This model card has been automatically generated.",
        "待补充": "数据来源：待补充",
    }
    assert set(samples) == {p.name for p in PLACEHOLDERS}
    for p in PLACEHOLDERS:
        assert p.pattern.search(samples[p.name]) and PLACEHOLDER_PATTERN.search(samples[p.name]), p.name


@pytest.mark.parametrize("text", ["todo list", "Mistral-7B", "This is an example of", "XXL model", "TBDs"])
def test_prose_is_not_a_placeholder(text):
    assert not PLACEHOLDER_PATTERN.search(text), text


def test_topics_have_chinese_keywords():
    for t in LIMITATION_TOPICS:
        assert re.search(r"[\u4e00-\u9fff]", t.keywords.pattern), t.key
