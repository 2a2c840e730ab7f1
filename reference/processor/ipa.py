"""IPA transcriptions: NFC-normalise, skip whitespace, split into the inventory's phones (longest first).

A character that starts no phone of the inventory is an error naming every such character, its
code point and its position; nothing is dropped or approximated (``ɡ`` U+0261 is not ``g``).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from .errors import ItemError

__all__ = ["segment_ipa"]


def segment_ipa(text: str, phones: Sequence[str]) -> list[str]:
    """The phones of ``text``, greedy longest match over ``phones``.

    >>> segment_ipa("stɹˈiːt", ["s", "t", "ɹ", "i", "ˈ", "ː"])
    ['s', 't', 'ɹ', 'ˈ', 'i', 'ː', 't']

    Raises:
        ItemError: characters that start no phone (all of them, with positions), or no phones at all.
    """
    text = unicodedata.normalize("NFC", text)
    by_length = sorted(set(phones), key=lambda p: (-len(p), p))
    out: list[str] = []
    unknown: list[str] = []
    i = 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        match = next((p for p in by_length if text.startswith(p, i)), None)
        if match is None:
            unknown.append(f"{text[i]!r} (U+{ord(text[i]):04X}) at {i}")
            i += 1
            continue
        out.append(match)
        i += len(match)
    if unknown:
        inventory = " ".join(sorted(phones))
        raise ItemError(
            f"unknown IPA phone(s) {', '.join(unknown)}; the inventory has {len(by_length)}: {inventory}",
            fix="transcribe with the inventory's symbols (ipa_phones in processor_config.json)",
        )
    if not out:
        raise ItemError("the IPA item has no phones", fix="drop the empty item")
    return out
