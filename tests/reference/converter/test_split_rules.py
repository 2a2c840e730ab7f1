"""The split-rule table and the dialect aliases are consistent with each other."""

from __future__ import annotations

import pytest

from vla_reference.converter import (
    ALIASES,
    FAMILIES,
    RULES,
    Split,
    canonical_keys,
    expected_shape,
    match_local,
    rule_for,
)

from builders import gpt2, llama, moe


def test_rule_templates_are_unique():
    templates = [r.template for r in RULES]
    assert len(templates) == len(set(templates))


def test_alias_local_names_are_unique_per_dialect():
    seen: dict[str, str] = {}
    for alias in ALIASES:
        assert seen.setdefault(alias.local, alias.canonical) == alias.canonical, alias.local


@pytest.mark.parametrize("alias", ALIASES, ids=lambda a: f"{a.dialect}:{a.local}")
def test_every_alias_resolves_to_its_rule(alias):
    key = alias.local.replace("{layer}", "3").replace("{expert}", "1")
    m = match_local(key)
    assert m is not None and m.rule.template == alias.canonical


@pytest.mark.parametrize("arch", [llama(), gpt2(), moe(), moe(every=1)], ids=["llama", "gpt2", "moe", "mixtral"])
def test_split_dims_fit_every_shape(arch):
    for key in canonical_keys(arch):
        rule, _, _ = rule_for(key)
        shape = expected_shape(rule, arch)
        assert all(s > 0 for s in shape), key
        if rule.split is Split.ROW:
            assert len(shape) == 2, key
        if rule.split in (Split.COLUMN, Split.VOCAB):
            assert len(shape) >= 1, key


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_family_keymaps_are_injective(family):
    hf = [t for km in family.keymap for t in km.hf]
    assert len(hf) == len(set(hf))
    assert len({km.canonical for km in family.keymap}) == len(family.keymap)
    for km in family.keymap:
        assert len(km.hf) == km.codec.arity, km.canonical


def test_canonical_keys_follow_the_moe_pattern():
    arch = moe(every=2)
    keys = canonical_keys(arch)
    assert "decoder.layers.0.mlp.router.weight" in keys
    assert "decoder.layers.1.mlp.linear_fc1.weight" in keys
    assert "decoder.layers.1.mlp.router.weight" not in keys
    assert "decoder.layers.0.mlp.experts.local_experts.3.linear_fc2.weight" in keys


def test_the_docs_show_the_current_split_rules():
    """docs/converter.md's copy of the rule table is the table (regenerate it with rules_markdown())."""
    from vla_reference.converter import rules_markdown

    from conftest import REPO

    doc = (REPO / "docs" / "converter.md").read_text()
    shown = doc.split("<!-- split-rules: begin -->\n", 1)[1].split("<!-- split-rules: end -->", 1)[0]
    assert shown == rules_markdown(), "docs/converter.md's split-rule table is stale: paste rules_markdown() there"
