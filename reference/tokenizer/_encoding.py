"""What the model and the loaders make of the package: embedding rows enough for every id, one id
per added token, round trips, and transformers agreeing with tokenizers."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from .._fs import read_json
from ..converter._families import family_for_config
from ..errors import ReleaseError
from ..findings import Finding
from ..hf._checkpoint import INDEX, SINGLE, read_weight_map
from ..hf._safetensors import SafetensorsFile
from ._build import mangled_by_byte_level
from ._checks import REGENERATE, key_of
from ._package import FileClaims, TokenizerPackage, WrittenToken

# the suite's golden text: a VLA prompt of each kind, and text that stresses whitespace and Unicode
GOLDEN_TEXT: Final[dict[str, str]] = {
    "driving-scene": "Describe this driving scene:<|image_start|><|image|><|image|><|image_end|> "
    "The action is:<|act:stop|>",
    "video": "<|video_start|><|camera:front|><|t_0|><|image|><|t_1|><|image|><|video_end|> Turn left.",
    "speech": "Say <|ipa_start|><|ipa_s|><|ipa_t|><|ipa_ɹ|><|ipa_i|><|ipa_ː|><|ipa_t|><|ipa_end|> slowly.",
    "script": "Build <|script_start|><|blender:cube|> <|blender:scale|>2<|blender:end|><|script_end|>",
    "actions": "<|action_start|><|action_bin_0|><|action_bin_31|><|action_end|> then<|act:turn_left|>now",
    "roles": "<|begin_of_text|>Hello there.<|end_of_text|><|pad|><|pad|>",
    "whitespace": "  two  spaces\ttab\nnew line \r\n <|image|> \n\n<|image|>\t end ",
    "unicode": "Straße, naïve café, 東京 🚗 ‒ ə ʃ θ ð ŋ, ﬁ ½",
    "lookalikes": "<|image|x <|act:fly|> <|image> |image|> <|IMAGE|> <|image|",
}

# where a special token must survive an encode -> decode round trip: {t} is the token
ROUND_TRIP_CONTEXTS: Final[dict[str, str]] = {
    "space-before": "go {t}",
    "space-after": "{t} go",
    "inside-word": "go{t}go",
    "newlines": "go\n{t}\ngo",
    "repeated": "{t}{t}",
}


@dataclass(frozen=True)
class EmbeddingRows:
    """A place that fixes how many token IDs the model has rows for."""

    path: Path
    key: str
    rows: int


# canonical parameters whose first dimension is the vocabulary (names from the families table)
_VOCAB_PARAMS: Final = ("embedding.word_embeddings.weight", "output_layer.weight")


def embedding_rows(model_dir: Path) -> list[EmbeddingRows]:
    """config.json's vocab_size and the rows of the input embedding and output head tensors.

    Tensors are found through the families table, so only for architectures the converter maps;
    for others only config.json is read.

    Raises:
        ReleaseError: config.json or a safetensors header cannot be read.
    """
    cfg_path = model_dir / "config.json"
    config = read_json(cfg_path)
    if not isinstance(config, dict):
        raise ReleaseError("config.json is not an object", path=cfg_path)
    out = []
    nested: dict[str, Any] = config["text_config"] if isinstance(config.get("text_config"), dict) else {}
    for key, value in (("vocab_size", config.get("vocab_size")), ("text_config.vocab_size", nested.get("vocab_size"))):
        if isinstance(value, int) and not isinstance(value, bool):
            out.append(EmbeddingRows(cfg_path, key, value))
    try:
        family = family_for_config(config, source=cfg_path)
    except ReleaseError:
        return out
    where: dict[str, Path] = {}
    index = model_dir / INDEX
    if index.is_file():
        try:
            where = read_weight_map(model_dir)
        except ReleaseError:
            return out  # the model area reports the index, naming it
    elif (model_dir / SINGLE).is_file():
        where = dict.fromkeys(SafetensorsFile(model_dir / SINGLE).keys(), model_dir / SINGLE)
    for canonical in _VOCAB_PARAMS:
        km, _, _ = family.map_for(canonical)
        for name in km.hf_keys(None, None):
            if name in where:
                out.append(EmbeddingRows(where[name], name, SafetensorsFile(where[name]).shape(name)[0]))
    return out


def embedding_shortfalls(rows: Sequence[EmbeddingRows], needed: int, largest: str) -> list[Finding]:
    """Every place in ``rows`` has at least ``needed`` (largest token ID + 1) rows."""
    return [
        Finding(
            "embedding too small for the tokenizer",
            f"{r.rows} rows",
            f"at least {needed} ({largest})",
            r.path,
            r.key,
            "resize the embeddings (and output head) to the tokenizer before training, "
            "or ship the tokenizer the model was trained with",
        )
        for r in rows
        if r.rows < needed
    ]


def _fix_for(pkg: TokenizerPackage, token: str) -> str:
    """The likely repair for a special token that does not survive encode -> decode."""
    if mangled_by_byte_level(token):
        return (
            "tokenizers' ByteLevel decoder turns the Latin-1 characters of an added token into single bytes "
            "(huggingface/tokenizers#1392): decode it through a Replace to its byte-level spelling first "
            "(tokenizer.decoder = vla_reference.tokenizer.byte_level_decoder(added_tokens)), then " + REGENERATE
        )
    t = next((t for t in pkg.added if t.content == token), None)
    set_flags = [f for f in ("single_word", "lstrip", "rstrip") if t is not None and t.flags and getattr(t.flags, f)]
    if set_flags:
        return (
            f"clear {', '.join(set_flags)} on it in tokenizer.json and tokenizer_config.json added_tokens_decoder "
            "(a special token must match anywhere and keep the text around it)"
        )
    return "make it an added token with special: true, normalized: false in tokenizer.json, then " + REGENERATE


def one_id_failures(
    pkg: TokenizerPackage, encode: Callable[[str], list[int]], decode: Callable[[list[int]], str]
) -> list[Finding]:
    """Each token a file declares special encodes alone to one ID that decodes back to it."""
    out = []
    for token, name, key in pkg.declared_specials():
        ids = encode(token)
        back = decode(ids)
        if len(ids) != 1:
            out.append(
                Finding(
                    "special token is not one token",
                    f"{token!r} encodes to {len(ids)} IDs {ids[:8]}",
                    "exactly one ID",
                    pkg.path(name),
                    key,
                    f"add {token!r} to tokenizer.json's added_tokens as a special token and {REGENERATE}, "
                    f"or stop declaring it special in {name}",
                )
            )
        elif back != token:
            out.append(
                Finding(
                    "special token does not decode back",
                    f"{token!r} -> {ids} -> {back!r}",
                    repr(token),
                    pkg.path(name),
                    key,
                    _fix_for(pkg, token),
                )
            )
    return out


def round_trip_failures(
    pkg: TokenizerPackage,
    context: str,
    encode: Callable[[str], list[int]],
    decode: Callable[[list[int]], str],
) -> list[Finding]:
    """In ``ROUND_TRIP_CONTEXTS[context]``, every special token is kept whole and the text decodes back.

    Tokens that do not encode alone to one ID are left to :func:`one_id_failures`.
    """
    template = ROUND_TRIP_CONTEXTS[context]
    out = []
    for token, _, _ in pkg.declared_specials():
        alone = encode(token)
        if len(alone) != 1:
            continue
        text = template.replace("{t}", token)
        ids = encode(text)
        back = decode(ids)
        expected = text.count(token)
        if ids.count(alone[0]) != expected or back != text:
            observed = f"{text!r} -> {ids[:12]}{'…' if len(ids) > 12 else ''} -> {back!r}"
            out.append(
                Finding(
                    f"special token does not survive ({context})",
                    observed,
                    f"{token!r} (ID {alone[0]}) {expected} time(s) and the same text back",
                    pkg.path("tokenizer.json"),
                    key_of(pkg, token),
                    _fix_for(pkg, token),
                )
            )
    return out


def transformers_overrides(pkg: TokenizerPackage) -> list[tuple[str, str]]:
    """``(key, what)`` for everything in tokenizer_config.json that transformers applies over tokenizer.json."""
    claims = pkg.claims.get("tokenizer_config.json", FileClaims())
    written: dict[str, WrittenToken] = {t.content: t for t in pkg.added}
    out = []
    for w in claims.tokens:
        t = written.get(w.content)
        if t is None:
            out.append((w.key, f"{w.content!r} is not an added token of tokenizer.json (transformers adds it)"))
        elif w.flags is not None and t.flags is not None:
            for flag, now, was in w.flags.changes(t.flags):
                out.append((f"{w.key}.{flag}", f"{w.content!r} {flag}={now} but {was} in tokenizer.json"))
    for s in claims.specials:
        if not pkg.ids_of(s.token):
            out.append((s.key, f"{s.token!r} is not in tokenizer.json (transformers adds it)"))
    return out


def _window(ids: Sequence[int], start: int, width: int = 8) -> str:
    part = ", ".join(map(str, ids[start : start + width]))
    return f"[{part}{', …' if len(ids) > start + width else ''}]"


def encoding_disagreements(
    pkg: TokenizerPackage,
    texts: Mapping[str, str],
    ours: tuple[Callable[[str], list[int]], Callable[[list[int]], str]],
    theirs: tuple[Callable[[str], list[int]], Callable[[list[int]], str]],
) -> list[Finding]:
    """transformers (``theirs``) encodes and decodes every text exactly as tokenizers (``ours``) does.

    A disagreement is attributed to what tokenizer_config.json overrides, when something does.
    """
    overrides = transformers_overrides(pkg)
    key = overrides[0][0] if overrides else None
    fix = (
        "make tokenizer_config.json agree with tokenizer.json: " + "; ".join(w for _, w in overrides[:4])
        if overrides
        else "load with tokenizers and transformers side by side and compare their added tokens"
    )
    path = pkg.path("tokenizer_config.json")
    out = []
    for name, text in texts.items():
        a, b = ours[0](text), theirs[0](text)
        if a != b:
            k = next((n for n, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
            out.append(
                Finding(
                    f"transformers.AutoTokenizer encodes the golden text {name!r} differently",
                    f"IDs from position {k}: {_window(b, k)}",
                    f"{_window(a, k)} (tokenizers.Tokenizer)",
                    path,
                    key,
                    fix,
                )
            )
            continue
        da, db = ours[1](a), theirs[1](a)
        if da != db:
            out.append(
                Finding(
                    f"transformers.AutoTokenizer decodes the golden text {name!r} differently",
                    repr(db),
                    f"{da!r} (tokenizers.Tokenizer)",
                    path,
                    key,
                    fix,
                )
            )
    return out
