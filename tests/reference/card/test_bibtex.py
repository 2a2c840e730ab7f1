"""The BibTeX parser: entries as BibTeX reads them, errors with line and column."""

from __future__ import annotations

import pytest

from vla_reference.card import BibTeXError, find_entries, parse_bibtex


def test_entries_fields_and_values():
    text = """Some prose with an email a@b.org before.
@String{conf = "Conference on "}
@comment{ignored {nested} }
@inproceedings{doe:2024/vla,
  Title = {The {VLA} model},
  author = "Doe, Jane and {Roe}, Richard",
  booktitle = conf # "Robots",
  year = 2024,
  month = mar,
}
@misc(key2, title={Two}, author={B}, year={2025})
"""
    first, second = parse_bibtex(text)
    assert (first.type, first.key, first.line) == ("inproceedings", "doe:2024/vla", 4)
    assert first.fields == {
        "title": "The {VLA} model",
        "author": "Doe, Jane and {Roe}, Richard",
        "booktitle": "Conference on Robots",
        "year": "2024",
        "month": "mar",
    }
    assert (second.type, second.key, second.fields["title"]) == ("misc", "key2", "Two")


def test_author_with_at_sign_and_no_entries():
    (entry,) = parse_bibtex(
        "@article{llama3modelcard,\n title={Llama 3 Model Card},\n author={AI@Meta},\n year={2024}}"
    )
    assert entry.fields["author"] == "AI@Meta"
    assert parse_bibtex("no entries, contact x@example.org") == []
    assert not find_entries("x@y.org") and find_entries("@misc{k,}")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("@misc{key,\n  title = {un{closed,\n}", r"unbalanced braces: '\{' never closed at line 2, column 11"),
        ("@misc{key,\n  title {x}}", r"found '\{', expected '=' after field 'title' at line 2, column 9"),
        ("@misc{key, title = {x} year = 1}", r"found 'y', expected ',' or '\}' after a field at line 1, column 24"),
        ("@misc{key, journal = jcp}", r"undefined string macro 'jcp' at line 1, column 22"),
        ("@misc{, title = {x}}", r"@misc entry has no citation key at line 1, column 7"),
        ("@misc{key, title = {a}, title = {b}}", r"duplicate field 'title' at line 1, column 25"),
        ('@misc{key, title = "a}"}', r"unbalanced '\}' inside a quoted value"),
        ("@misc{key, title = {x}", r"unexpected end of text, expected '\}' closing the entry"),
    ],
)
def test_errors(text, message):
    with pytest.raises(BibTeXError, match=message):
        parse_bibtex(text)


def test_error_carries_position_and_key():
    with pytest.raises(BibTeXError) as e:
        parse_bibtex("\n\n@misc{k1,\n title = {x}\n year = 1}")
    assert (e.value.line, e.value.column, e.value.key) == (5, 2, "k1")
    assert e.value.fix == "fix the BibTeX entry"
