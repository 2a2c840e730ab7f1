"""The reference tokenizer package: a byte-level BPE plus the VLA tokens, written atomically.

Files (the chapter's atomic unit): tokenizer.json, vocab.json, merges.txt,
special_tokens_map.json, added_tokens.json, tokenizer_config.json. Same inputs, same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

__all__ = [
    "TOKENIZER_FILES",
    "SPECIAL_TOKENS",
    "VLA_TOKENS",
    "N_VISUAL_CODES",
    "N_AUDIO_CODES",
    "N_ACTION_BINS",
    "N_TIMESTAMPS",
    "build_tokenizer",
    "bundled_corpus",
]

TOKENIZER_FILES: Final[tuple[str, ...]] = (
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer_config.json",
)


@dataclass(frozen=True)
class SpecialTokens:
    bos: str = "<|begin_of_text|>"
    eos: str = "<|end_of_text|>"
    pad: str = "<|pad|>"
    unk: str = "<|unk|>"


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


def bundled_corpus() -> str:
    return resources.files(__package__).joinpath("data/corpus.txt").read_text(encoding="utf-8")


def _dump(obj: object) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def build_tokenizer(
    out_dir: Path,
    *,
    corpus: Sequence[str] | None = None,
    base_vocab_size: int = 320,
    extra_tokens: Sequence[str] = (),
    model_max_length: int = 4096,
) -> Tokenizer:
    """Train a byte-level BPE on ``corpus`` and write the whole package into ``out_dir``.

    The four special tokens come first (ids 0..3), then the BPE vocabulary, then
    :data:`VLA_TOKENS` and ``extra_tokens`` in order.

    Example:
        >>> tok = build_tokenizer(Path("model"))  # doctest: +SKIP
        >>> tok.token_to_id("<|image|>")          # doctest: +SKIP
    """
    lines = list(corpus) if corpus is not None else bundled_corpus().splitlines()
    specials = [SPECIAL_TOKENS.bos, SPECIAL_TOKENS.eos, SPECIAL_TOKENS.pad, SPECIAL_TOKENS.unk]
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
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tokenizer.json").write_text(tok.to_str(pretty=True) + "\n", encoding="utf-8")
    model = json.loads(tok.to_str())["model"]
    (out_dir / "vocab.json").write_text(_dump(model["vocab"]), encoding="utf-8")
    merges = ["#version: 0.2"] + [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
    (out_dir / "merges.txt").write_text("\n".join(merges) + "\n", encoding="utf-8")
    added = {t: tok.token_to_id(t) for t in (*specials, *VLA_TOKENS, *extra_tokens)}
    (out_dir / "added_tokens.json").write_text(_dump(added), encoding="utf-8")
    special_map = {
        "bos_token": SPECIAL_TOKENS.bos,
        "eos_token": SPECIAL_TOKENS.eos,
        "pad_token": SPECIAL_TOKENS.pad,
        "unk_token": SPECIAL_TOKENS.unk,
        "additional_special_tokens": list(VLA_TOKENS) + list(extra_tokens),
    }
    (out_dir / "special_tokens_map.json").write_text(_dump(special_map), encoding="utf-8")
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": model_max_length,
        "bos_token": SPECIAL_TOKENS.bos,
        "eos_token": SPECIAL_TOKENS.eos,
        "pad_token": SPECIAL_TOKENS.pad,
        "unk_token": SPECIAL_TOKENS.unk,
        "extra_special_tokens": list(VLA_TOKENS) + list(extra_tokens),
        "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": {
            str(i): {
                "content": t,
                "special": True,
                "normalized": False,
                "lstrip": False,
                "rstrip": False,
                "single_word": False,
            }
            for t, i in added.items()
        },
    }
    (out_dir / "tokenizer_config.json").write_text(_dump(config), encoding="utf-8")
    return tok
