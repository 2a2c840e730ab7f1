"""The reference tokenizer builder: the whole package, deterministic bytes, IDs as the contract says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import AddedToken, Tokenizer

from vla_reference.errors import ReleaseError
from vla_reference.tokenizer import (
    PACKAGE_FILES,
    SPECIAL_TOKENS,
    TOKENIZER_FILES,
    VLA_TOKENS,
    SpecialTokens,
    build_tokenizer,
    byte_level_decoder,
    mangled_by_byte_level,
    package_files,
    write_tokenizer_package,
)

GOLDEN = Path(__file__).resolve().parents[3] / "golden"  # not via conftest: nested conftests shadow it


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Tokenizer, Path]:
    out = tmp_path_factory.mktemp("tok") / "model"
    return build_tokenizer(out), out


def test_package_table_names_each_file_once():
    assert len(set(TOKENIZER_FILES)) == len(PACKAGE_FILES) == 6
    assert TOKENIZER_FILES[0] == "tokenizer.json"


def test_writes_the_whole_package(built):
    _, out = built
    assert sorted(p.name for p in out.iterdir()) == sorted(TOKENIZER_FILES)


def test_same_inputs_same_bytes(built, tmp_path):
    _, out = built
    again = tmp_path / "again"
    build_tokenizer(again)
    for name in TOKENIZER_FILES:
        assert (again / name).read_bytes() == (out / name).read_bytes(), name


def test_roles_first_then_base_vocabulary_then_vla_tokens(built):
    tok, _ = built
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS.by_role().values()] == [0, 1, 2, 3]
    base = tok.get_vocab_size(with_added_tokens=False)
    assert [tok.token_to_id(t) for t in VLA_TOKENS] == list(range(base, base + len(VLA_TOKENS)))


def test_vla_token_ids_are_the_released_contract():
    """The inventory keeps the order the golden releases shipped: appending is fine, moving is not."""
    shipped = json.loads((GOLDEN / "dense/model/added_tokens.json").read_text(encoding="utf-8"))
    first = shipped[VLA_TOKENS[0]]
    assert {t: shipped[t] for t in VLA_TOKENS} == {t: first + i for i, t in enumerate(VLA_TOKENS)}
    assert len(VLA_TOKENS) == len(set(VLA_TOKENS))


def test_every_file_derives_from_the_tokenizer(built):
    tok, out = built
    added = json.loads((out / "added_tokens.json").read_text(encoding="utf-8"))
    assert added == {t.content: i for i, t in tok.get_added_tokens_decoder().items()}
    config = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["extra_special_tokens"] == list(VLA_TOKENS)
    assert {int(i): e["content"] for i, e in config["added_tokens_decoder"].items()} == {v: k for k, v in added.items()}
    special_map = json.loads((out / "special_tokens_map.json").read_text(encoding="utf-8"))
    assert special_map["additional_special_tokens"] == list(VLA_TOKENS)
    assert special_map["eos_token"] == config["eos_token"] == SPECIAL_TOKENS.eos
    vocab = json.loads((out / "vocab.json").read_text(encoding="utf-8"))
    assert vocab == tok.get_vocab(with_added_tokens=False)
    merges = (out / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0] == "#version: 0.2" and len(merges) - 1 == len(json.loads(tok.to_str())["model"]["merges"])


def test_extra_tokens_come_after_the_vla_tokens(tmp_path):
    tok = build_tokenizer(tmp_path / "m", extra_tokens=("<|act:reverse|>",))
    assert tok.token_to_id("<|act:reverse|>") == tok.token_to_id(VLA_TOKENS[-1]) + 1


def test_every_added_token_decodes_to_itself(built):
    tok, _ = built
    for token in (*SPECIAL_TOKENS.by_role().values(), *VLA_TOKENS):
        assert tok.decode([tok.token_to_id(token)], skip_special_tokens=False) == token


def test_byte_level_mangles_latin_1_tokens_only():
    assert mangled_by_byte_level("<|ipa_ð|>")  # ð is byte 0xf0 in the byte-level table
    assert not mangled_by_byte_level("<|ipa_ə|>")  # outside the table: passed through
    assert not mangled_by_byte_level("<|image|>")  # ASCII: one byte per character anyway
    assert [t for t in VLA_TOKENS if mangled_by_byte_level(t)] == ["<|ipa_ð|>"]


def test_byte_level_decoder_leaves_base_tokens_alone(built):
    tok, _ = built
    text = "ð🚗 ðð<|ipa_ð|> Straße"
    assert tok.decode(tok.encode(text).ids, skip_special_tokens=False) == text
    assert type(byte_level_decoder(["<|image|>"])).__name__ == "ByteLevel"


def test_transformers_loads_the_package(built):
    from transformers import AutoTokenizer

    tok, out = built
    auto = AutoTokenizer.from_pretrained(out)
    assert auto.eos_token_id == tok.token_to_id(SPECIAL_TOKENS.eos)
    assert auto.convert_tokens_to_ids(VLA_TOKENS[-1]) == tok.token_to_id(VLA_TOKENS[-1])
    text = "Turn left<|act:turn_left|> <|ipa_ð|>"
    assert auto(text)["input_ids"] == tok.encode(text).ids


def test_adding_tokens_keeps_every_released_id(built, tmp_path):
    tok, out = built
    grown = Tokenizer.from_str(tok.to_str())
    grown.add_special_tokens([AddedToken("<|act:reverse|>", special=True, normalized=False)])
    write_tokenizer_package(grown, tmp_path, fsync=False)
    before = json.loads((out / "added_tokens.json").read_text(encoding="utf-8"))
    after = json.loads((tmp_path / "added_tokens.json").read_text(encoding="utf-8"))
    assert after == {**before, "<|act:reverse|>": max(before.values()) + 1}


def test_a_failed_write_leaves_the_old_package(built, tmp_path, monkeypatch):
    tok, out = built
    target = tmp_path / "model"
    target.mkdir()
    for name in TOKENIZER_FILES:
        (target / name).write_bytes((out / name).read_bytes())
    grown = Tokenizer.from_str(tok.to_str())
    grown.add_special_tokens([AddedToken("<|act:reverse|>", special=True, normalized=False)])
    calls = []
    real = Path.write_bytes

    def failing(self, data):
        calls.append(self.name)
        if len(calls) == 4:
            raise OSError("disk full")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", failing)
    with pytest.raises(OSError, match="disk full"):
        write_tokenizer_package(grown, target, fsync=False)
    monkeypatch.undo()
    assert sorted(p.name for p in target.iterdir()) == sorted(TOKENIZER_FILES)  # no staging left behind
    for name in TOKENIZER_FILES:
        assert (target / name).read_bytes() == (out / name).read_bytes(), name


def test_a_role_token_missing_from_the_tokenizer_is_refused(built):
    tok, _ = built
    with pytest.raises(
        ReleaseError, match=r"eos token '<\|eot\|>' is not in the tokenizer \[eos_token\]\. Fix: add it"
    ):
        package_files(tok, special_tokens=SpecialTokens(eos="<|eot|>"))


def test_a_model_other_than_bpe_is_refused():
    from tokenizers import models

    with pytest.raises(ReleaseError, match=r"the tokenizer model is 'WordLevel'.*\[model.type\]"):
        package_files(Tokenizer(models.WordLevel({"a": 0}, unk_token="a")))
