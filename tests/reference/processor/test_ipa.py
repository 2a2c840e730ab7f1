"""IPA: segmentation into the inventory's phones, unknown phones named with code points and positions."""

import pytest

import vla_reference.processor as vp
from vla_reference.processor.ipa import segment_ipa

pytest_plugins = ["processor_fixtures"]


def test_segments_a_word():
    assert segment_ipa("stɹˈiːt", ["s", "t", "ɹ", "i", "ˈ", "ː"]) == ["s", "t", "ɹ", "ˈ", "i", "ː", "t"]


def test_longest_phone_first():
    # "tʃ" is one phone when the inventory has it, not "t" + "ʃ"
    assert segment_ipa("tʃɪt", ["t", "ʃ", "tʃ", "ɪ"]) == ["tʃ", "ɪ", "t"]
    assert segment_ipa("tʃɪt", ["t", "ʃ", "ɪ"]) == ["t", "ʃ", "ɪ", "t"]


def test_whitespace_separates_words_and_emits_nothing():
    assert segment_ipa(" ə  ɪ\n", ["ə", "ɪ"]) == ["ə", "ɪ"]


def test_input_is_nfc_normalised():
    # e + combining acute (2 code points) is the inventory's é (1 code point)
    assert segment_ipa("e\u0301", ["é"]) == ["é"]


def test_unknown_phones_are_all_named():
    # U+0261 LATIN SMALL LETTER SCRIPT G is not ASCII g, and is never silently mapped to it
    with pytest.raises(
        vp.ItemError, match=r"unknown IPA phone\(s\) 'ɡ' \(U\+0261\) at 0, 'x' \(U\+0078\) at 3; the inventory has 2"
    ):
        segment_ipa("ɡa x", ["a", "g"])


def test_an_empty_transcription_is_refused():
    with pytest.raises(vp.ItemError, match="no phones"):
        segment_ipa("  ", ["a"])


def test_ipa_tokens(golden_processor):
    tokens = golden_processor.tokenizer.convert_ids_to_tokens(
        golden_processor([vp.IPA("stɹˈiːt")])["input_ids"][0].tolist()
    )
    assert tokens[1:] == ["<|ipa_start|>", *(f"<|ipa_{p}|>" for p in "stɹˈiːt"), "<|ipa_end|>"]


def test_processor_names_the_ipa_item(golden_processor):
    with pytest.raises(vp.ItemError, match=r"item 1 \(ipa\): unknown IPA phone\(s\) 'ʀ' \(U\+0280\) at 1"):
        golden_processor(["say", vp.IPA("aʀ")])
