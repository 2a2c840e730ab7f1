"""3D scripts: the grammar's pieces by hand, canonical numbers, errors at line and column."""

import pytest

import vla_reference.processor as vp
from vla_reference.processor.script3d import KEYWORDS, canonical_number, parse_script, script_pieces
from vla_reference.tokenizer import VLA_TOKENS

pytest_plugins = ["processor_fixtures"]

SCENE = """# a table
group
  translate 0 0 0.75
  cube 1.50
  scale 1 1 0.1
  cylinder 0.05 0.7
end
torus 2 -0.25
"""


def test_pieces_of_a_scene():
    assert script_pieces(parse_script(SCENE, decimals=3)) == [
        ("keyword", "group"),
        ("keyword", "translate"),
        *[("number", n) for n in ("0", "0", "0.75")],
        ("keyword", "cube"),
        ("number", "1.5"),
        ("keyword", "scale"),
        *[("number", n) for n in ("1", "1", "0.1")],
        ("keyword", "cylinder"),
        *[("number", n) for n in ("0.05", "0.7")],
        ("keyword", "end"),
        ("keyword", "torus"),
        *[("number", n) for n in ("2", "-0.25")],
    ]


@pytest.mark.parametrize(
    "text, decimals, expected",
    [
        ("1.50", 3, "1.5"),
        ("-0.0004", 3, "0"),  # rounds to -0.000, written 0
        ("0.0005", 3, "0"),  # half to even: 0.000
        ("0.0015", 3, "0.002"),  # half to even: 0.002
        ("-12.34567", 2, "-12.35"),
        ("007", 0, "7"),
        ("123456789012345678901234567890.5", 0, "123456789012345678901234567890"),
    ],
)
def test_canonical_numbers(text, decimals, expected):
    assert canonical_number(text, decimals) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("cube 1\ncubee 2", r"line 2, column 1: unknown keyword 'cubee'"),
        ("cube 1\n  translate 1 2", r"line 2, column 3: 'translate' takes 3 number\(s\) \(x, y, z\), found 2"),
        ("sphere 1 2", r"line 1, column 10: 'sphere' takes 1 number\(s\) \(radius\), found 2"),
        ("cube 1e3", r"line 1, column 6: '1e3' is not a number"),
        ("cube +1", r"line 1, column 6: '\+1' is not a number"),
        ("cube 1\nend", r"line 2, column 1: 'end' without an open 'group'"),
        # the one 'end' closes the inner group: the outer one, line 1, stays open
        ("group\n cube 1\n group\n  cube 2\n end", r"line 1, column 1: 'group' is never closed"),
        ("cube 1\nrotate 0 0 90", r"line 2, column 1: 'rotate' applies to nothing"),
        ("group\nscale 1 1 1\nend\ncube 1", r"line 2, column 1: 'scale' applies to nothing"),
        ("# only a comment\n\n", r"line 1, column 1: the script has no statements"),
    ],
    ids=[
        "keyword",
        "arity-short",
        "arity-long",
        "exponent",
        "plus",
        "stray-end",
        "unclosed",
        "dangling",
        "dangling-in-group",
        "empty",
    ],
)
def test_errors_name_line_and_column(text, message):
    with pytest.raises(vp.ScriptSyntaxError, match=message):
        parse_script(text, decimals=3)


def test_errors_carry_their_position():
    with pytest.raises(vp.ScriptSyntaxError) as e:
        parse_script("cube 1\n\n   cone 1 x", decimals=3)
    assert (e.value.line, e.value.column) == (3, 11)


def test_every_keyword_has_its_token():
    assert [k.word for k in KEYWORDS] == [t[len("<|blender:") : -2] for t in VLA_TOKENS if t.startswith("<|blender:")]


def test_script_tokens(golden_processor):
    ids = golden_processor([vp.Script3D("translate 1 2 3\ncube 1.50")])["input_ids"][0].tolist()
    tok = golden_processor.tokenizer

    def text(s):
        return tok(s, add_special_tokens=False)["input_ids"]

    expected = [
        tok.bos_token_id,
        tok.convert_tokens_to_ids("<|script_start|>"),
        tok.convert_tokens_to_ids("<|blender:translate|>"),
        *text(" 1"),
        *text(" 2"),
        *text(" 3"),
        tok.convert_tokens_to_ids("<|blender:cube|>"),
        *text(" 1.5"),
        tok.convert_tokens_to_ids("<|script_end|>"),
    ]
    assert ids == expected
    assert tok.decode(ids[2:-1]) == "<|blender:translate|> 1 2 3<|blender:cube|> 1.5"


def test_processor_names_the_script_item(golden_processor):
    with pytest.raises(
        vp.ScriptSyntaxError, match=r"sequence 1, item 2 \(script\): line 1, column 1: unknown keyword 'box'"
    ):
        golden_processor([["a"], ["b", "c", vp.Script3D("box 1")]])
