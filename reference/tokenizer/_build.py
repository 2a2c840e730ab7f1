"""The reference tokenizer package: a byte-level BPE plus the VLA tokens, written atomically.

Files (the chapter's atomic unit, see :data:`PACKAGE_FILES`): tokenizer.json, vocab.json,
merges.txt, special_tokens_map.json, added_tokens.json, tokenizer_config.json. Every file is
derived from one ``tokenizers.Tokenizer``, so they agree by construction; same inputs, same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Final

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from .._fs import atomic_dir, fsync_file, sha256_file
from ..errors import ReleaseError

__all__ = [
    "PackageFile",
    "PACKAGE_FILES",
    "TOKENIZER_FILES",
    "tokenizer_checksum",
    "SpecialTokens",
    "SPECIAL_TOKENS",
    "VLA_TOKENS",
    "N_VISUAL_CODES",
    "N_AUDIO_CODES",
    "N_ACTION_BINS",
    "N_TIMESTAMPS",
    "build_tokenizer",
    "bundled_corpus",
    "byte_level_decoder",
    "mangled_by_byte_level",
    "package_files",
    "write_tokenizer_package",
]


@dataclass(frozen=True)
class PackageFile:
    """One file of the tokenizer package and who reads it."""

    name: str
    holds: str
    bpe_only: bool = False  # vocab.json and merges.txt exist only for a BPE model


PACKAGE_FILES: Final[tuple[PackageFile, ...]] = (
    PackageFile("tokenizer.json", "the model, added tokens with IDs and flags; what tokenizers and transformers load"),
    PackageFile("vocab.json", "the BPE vocabulary, token -> ID (slow tokenizers, other runtimes)", bpe_only=True),
    PackageFile("merges.txt", "the BPE merges in rank order (slow tokenizers, other runtimes)", bpe_only=True),
    PackageFile("special_tokens_map.json", "role tokens and additional_special_tokens (transformers 4)"),
    PackageFile("added_tokens.json", "added token -> ID (slow tokenizers)"),
    PackageFile("tokenizer_config.json", "roles, extra_special_tokens, added_tokens_decoder (transformers 5)"),
)
TOKENIZER_FILES: Final[tuple[str, ...]] = tuple(f.name for f in PACKAGE_FILES)


@dataclass(frozen=True)
class SpecialTokens:
    """The role tokens: beginning and end of text, padding, unknown."""

    bos: str = "<|begin_of_text|>"
    eos: str = "<|end_of_text|>"
    pad: str = "<|pad|>"
    unk: str = "<|unk|>"

    def by_role(self) -> dict[str, str]:
        """``{"bos": ..., "eos": ..., "pad": ..., "unk": ...}``."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


SPECIAL_TOKENS: Final = SpecialTokens()

_IPA: Final = (
    "a",
    "e",
    "i",
    "o",
    "u",
    "ə",
    "ɪ",
    "ʊ",
    "ʃ",
    "ʒ",
    "θ",
    "ð",
    "ŋ",
    "ɹ",
    "p",
    "b",
    "t",
    "d",
    "k",
    "g",
    "s",
    "z",
    "m",
    "n",
    "l",
    "f",
    "v",
    "h",
    "w",
    "j",
    "ˈ",
    "ː",
)
_BLENDER: Final = (
    "cube",
    "sphere",
    "cylinder",
    "cone",
    "plane",
    "torus",
    "translate",
    "rotate",
    "scale",
    "group",
    "end",
)
_ACTIONS: Final = (
    "turn_left",
    "turn_right",
    "go_straight",
    "stop",
    "slow_down",
    "speed_up",
    "change_lane_left",
    "change_lane_right",
)
_CAMERAS: Final = ("front", "rear", "left", "right")
# sizes of the code vocabularies the reference VLAProcessor emits
N_VISUAL_CODES: Final = 64  # VQ codebook entries: <|vq_k|>
N_AUDIO_CODES: Final = 32  # residual codebook, n_q * entries, flattened: <|audio_k|>
N_ACTION_BINS: Final = 32  # uniform bins of normalised action values: <|action_bin_k|>
N_TIMESTAMPS: Final = 32  # temporal groups of a video: <|t_k|>


def _vla_tokens() -> tuple[str, ...]:
    tokens = [
        "<|image|>",
        "<|image_start|>",
        "<|image_end|>",
        "<|row_sep|>",
        "<|video_start|>",
        "<|video_end|>",
        "<|audio_start|>",
        "<|audio_end|>",
        "<|script_start|>",
        "<|script_end|>",
        "<|ipa_start|>",
        "<|ipa_end|>",
        "<|action_start|>",
        "<|action_end|>",
    ]
    tokens += [f"<|camera:{c}|>" for c in _CAMERAS]
    tokens += [f"<|t_{i}|>" for i in range(N_TIMESTAMPS)]
    tokens += [f"<|ipa_{p}|>" for p in _IPA]
    tokens += [f"<|blender:{b}|>" for b in _BLENDER]
    tokens += [f"<|act:{a}|>" for a in _ACTIONS]
    tokens += [f"<|vq_{i}|>" for i in range(N_VISUAL_CODES)]
    tokens += [f"<|audio_{i}|>" for i in range(N_AUDIO_CODES)]
    tokens += [f"<|action_bin_{i}|>" for i in range(N_ACTION_BINS)]
    return tuple(tokens)


# added after the base vocabulary, in this order: the ids are a contract with the weights
VLA_TOKENS: Final[tuple[str, ...]] = _vla_tokens()


def _byte_chars() -> dict[int, str]:
    """GPT-2's byte -> printable character table, which the ByteLevel pre-tokenizer and decoder use."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(others)}}


BYTE_CHARS: Final[dict[int, str]] = _byte_chars()
_CHAR_BYTES: Final[dict[str, int]] = {c: b for b, c in BYTE_CHARS.items()}


def mangled_by_byte_level(token: str) -> bool:
    """The ByteLevel decoder would corrupt this added token.

    It maps a token made only of table characters back to one byte per character, added tokens
    included (huggingface/tokenizers#1392): ``<|ipa_ð|>`` decodes to ``<|ipa_\ufffd|>``.
    """
    if not all(c in _CHAR_BYTES for c in token):
        return False  # the decoder passes such a token through as it is
    return bytes(_CHAR_BYTES[c] for c in token).decode("utf-8", errors="replace") != token


def byte_level_decoder(added: Sequence[str]) -> decoders.Decoder:
    """A ByteLevel decoder that decodes every token of ``added`` to itself.

    Each token :func:`mangled_by_byte_level` is first replaced by its byte-level spelling, which
    the ByteLevel decoder turns back into the token. Base tokens are never affected: their
    byte-level spelling of valid UTF-8 cannot contain an added token's raw Latin-1 text.
    """
    fixes = [decoders.Replace(t, "".join(BYTE_CHARS[b] for b in t.encode())) for t in added if mangled_by_byte_level(t)]
    return decoders.Sequence([*fixes, decoders.ByteLevel()]) if fixes else decoders.ByteLevel()


def bundled_corpus() -> str:
    """The small English driving corpus the reference BPE is trained on."""
    return resources.files("vla_reference").joinpath("data/corpus.txt").read_text(encoding="utf-8")


def _dump(obj: object) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n").encode()


def _flags(token: AddedToken) -> dict[str, object]:
    return {
        "content": token.content,
        "special": token.special,
        "normalized": token.normalized,
        "lstrip": token.lstrip,
        "rstrip": token.rstrip,
        "single_word": token.single_word,
    }


def package_files(
    tokenizer: Tokenizer, *, special_tokens: SpecialTokens = SPECIAL_TOKENS, model_max_length: int = 4096
) -> dict[str, bytes]:
    """The bytes of every package file, all derived from ``tokenizer`` (deterministic).

    Raises:
        ReleaseError: a role token is not in the tokenizer, or the model is not a BPE.
    """
    spec = json.loads(tokenizer.to_str())
    model = spec["model"]
    if model.get("type") != "BPE":
        raise ReleaseError(
            f"the tokenizer model is {model.get('type')!r}; vocab.json and merges.txt need a BPE",
            key="model.type",
            fix="train a byte-level BPE (build_tokenizer) or ship your runtime's own files",
        )
    roles = special_tokens.by_role()
    for role, token in roles.items():
        if tokenizer.token_to_id(token) is None:
            raise ReleaseError(
                f"{role} token {token!r} is not in the tokenizer",
                key=f"{role}_token",
                fix="add it with tokenizer.add_special_tokens before writing the package",
            )
    added = sorted(tokenizer.get_added_tokens_decoder().items())
    extra = [t.content for _, t in added if t.special and t.content not in roles.values()]
    merges = ["#version: 0.2"] + [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
    role_keys = {f"{role}_token": token for role, token in roles.items()}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": model_max_length,
        **role_keys,
        "extra_special_tokens": extra,
        "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": {str(i): _flags(t) for i, t in added},
    }
    return {
        "tokenizer.json": (tokenizer.to_str(pretty=True) + "\n").encode(),
        "vocab.json": _dump(model["vocab"]),
        "merges.txt": ("\n".join(merges) + "\n").encode(),
        "special_tokens_map.json": _dump({**role_keys, "additional_special_tokens": extra}),
        "added_tokens.json": _dump({t.content: i for i, t in added}),
        "tokenizer_config.json": _dump(config),
    }


def _install(out_dir: Path, files: Mapping[str, bytes], *, fsync: bool) -> None:
    """Write every file to a staging directory first, then rename each into place.

    A failure while writing leaves ``out_dir`` as it was: never a package half old, half new.
    """
    if not out_dir.exists():
        with atomic_dir(out_dir, fsync=fsync) as tmp:
            for name, data in files.items():
                (tmp / name).write_bytes(data)
        return
    stage = Path(tempfile.mkdtemp(prefix=".tokenizer-package.tmp-", dir=out_dir))
    try:
        for name, data in files.items():
            (stage / name).write_bytes(data)
            if fsync:
                fsync_file(stage / name)
        for name in files:
            os.replace(stage / name, out_dir / name)
        if fsync:
            fsync_file(out_dir)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def write_tokenizer_package(
    tokenizer: Tokenizer,
    out_dir: Path,
    *,
    special_tokens: SpecialTokens = SPECIAL_TOKENS,
    model_max_length: int = 4096,
    fsync: bool = True,
) -> None:
    """Write the six package files of ``tokenizer`` into ``out_dir``, all or none.

    Use it to complete a package that transformers 5 saved (it writes only tokenizer.json and
    tokenizer_config.json), or after adding tokens for a fine-tune: new tokens get IDs after
    the largest existing one, so every released ID stays put.

    Example:
        >>> tok = Tokenizer.from_file("model/tokenizer.json")      # doctest: +SKIP
        >>> tok.add_special_tokens([AddedToken("<|act:reverse|>", special=True, normalized=False)])  # doctest: +SKIP
        >>> write_tokenizer_package(tok, Path("model"))           # doctest: +SKIP
    """
    _install(
        Path(out_dir),
        package_files(tokenizer, special_tokens=special_tokens, model_max_length=model_max_length),
        fsync=fsync,
    )


def build_tokenizer(
    out_dir: Path,
    *,
    corpus: Sequence[str] | None = None,
    base_vocab_size: int = 320,
    extra_tokens: Sequence[str] = (),
    model_max_length: int = 4096,
    fsync: bool = False,
) -> Tokenizer:
    """Train a byte-level BPE on ``corpus`` and write the whole package into ``out_dir``.

    The four special tokens come first (ids 0..3), then the BPE vocabulary, then
    :data:`VLA_TOKENS` and ``extra_tokens`` in order; the decoder gives every added token back
    unchanged (:func:`byte_level_decoder`). The package is written atomically
    (:func:`write_tokenizer_package`); the same arguments give the same bytes.

    Example:
        >>> tok = build_tokenizer(Path("model"))  # doctest: +SKIP
        >>> tok.token_to_id("<|image|>")          # doctest: +SKIP
        320
    """
    lines = list(corpus) if corpus is not None else bundled_corpus().splitlines()
    specials = list(SPECIAL_TOKENS.by_role().values())
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=base_vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (*VLA_TOKENS, *extra_tokens)])
    tok.decoder = byte_level_decoder([*VLA_TOKENS, *extra_tokens])
    write_tokenizer_package(tok, out_dir, model_max_length=model_max_length, fsync=fsync)
    return tok


def tokenizer_checksum(root: Path, hashes: dict[str, str] | None = None) -> str:
    """The tokenizer package checksum (see the module docstring)."""
    lines = []
    for name in TOKENIZER_FILES:
        rel = f"model/{name}"
        if (root / rel).is_file():
            digest = hashes[rel] if hashes and rel in hashes else sha256_file(root / rel)
            lines.append(f"{rel}\t{digest}\n")
    return "sha256:" + hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()
