"""The token layout: every token the processor emits, resolved against the tokenizer and checked once.

Code tokens (VQ codes, audio codes, action bins, timestamps) are addressed by an explicit offset
into the added tokens: code ``k`` is token id ``offset + k``, and the config's offset must agree
with the tokenizer for every ``k`` (``<|vq_k|>`` has id ``visual_token_offset + k``). Every
emitted token must be an added token, so text never produces one and no code collides with text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from .actions import Action
from .config import PROCESSOR_CONFIG, ProcessorConfig
from .errors import ProcessorConfigError
from .script3d import KEYWORDS

__all__ = ["CodeRange", "CODE_RANGES", "Modality", "MODALITIES", "TokenMap", "resolve_tokens"]


@dataclass(frozen=True)
class CodeRange:
    """A contiguous family of code tokens: its template role and the config key of its offset."""

    name: str
    template: str
    offset_key: str


CODE_RANGES: Final[tuple[CodeRange, ...]] = (
    CodeRange("visual_code", "visual_code", "visual_token_offset"),
    CodeRange("audio_code", "audio_code", "audio_token_offset"),
    CodeRange("action_bin", "action_bin", "action_token_offset"),
    CodeRange("timestamp", "timestamp", "timestamp_token_offset"),
)


@dataclass(frozen=True)
class Modality:
    """A modality: its ``mm_token_type_ids`` value, delimiter roles and the code ranges it may emit."""

    name: str
    type_id: int
    delimiters: tuple[str, ...]
    extra_roles: tuple[str, ...]  # other fixed tokens it may emit
    codes: tuple[str, ...]  # CodeRange names
    named: tuple[str, ...]  # TokenMap name families: cameras, actions, ipa, script


# type ids 1-3 follow transformers' mm_token_type_ids (image, video, audio)
MODALITIES: Final[tuple[Modality, ...]] = (
    Modality("text", 0, (), (), (), ()),
    Modality("image", 1, ("image_start", "image_end"), ("row_sep", "image"), ("visual_code",), ()),
    Modality(
        "video", 2, ("video_start", "video_end"), ("row_sep", "image"), ("visual_code", "timestamp"), ("cameras",)
    ),
    Modality("audio", 3, ("audio_start", "audio_end"), (), ("audio_code",), ()),
    Modality("action", 4, ("action_start", "action_end"), (), ("action_bin",), ("actions",)),
    Modality("script", 5, ("script_start", "script_end"), (), (), ("script",)),
    Modality("ipa", 6, ("ipa_start", "ipa_end"), (), (), ("ipa",)),
)
_BY_NAME: Final = {m.name: m for m in MODALITIES}


@dataclass(frozen=True)
class TokenMap:
    """Resolved ids: delimiters by role, named tokens by name, code ranges as (offset, count)."""

    roles: Mapping[str, int]
    cameras: Mapping[str, int]
    actions: Mapping[Action, int]
    ipa: Mapping[str, int]
    script: Mapping[str, int]
    ranges: Mapping[str, tuple[int, int]]
    bos: int | None
    pad: int
    added: frozenset[int]  # every added token: text items may not produce these

    def code(self, name: str, k: int) -> int:
        offset, count = self.ranges[name]
        if not 0 <= k < count:
            raise IndexError(f"{name} {k} outside [0, {count})")
        return offset + k

    def modality_ids(self, name: str) -> frozenset[int]:
        """Every id ``name`` may emit besides text (the script's numbers are text tokens)."""
        m = _BY_NAME[name]
        ids = {self.roles[r] for r in (*m.delimiters, *m.extra_roles)}
        for family in m.named:
            ids |= set(getattr(self, family).values())
        for code in m.codes:
            offset, count = self.ranges[code]
            ids |= set(range(offset, offset + count))
        return frozenset(ids)


def resolve_tokens(tokenizer: Any, cfg: ProcessorConfig, counts: Mapping[str, int]) -> TokenMap:
    """Resolve and check every token of ``cfg`` in ``tokenizer``; ``counts`` sizes each code range.

    Raises:
        ProcessorConfigError: every token that is missing, not an added token, or off its offset.
    """
    vocab: dict[str, int] = tokenizer.get_vocab()
    added = frozenset(int(i) for i in tokenizer.added_tokens_decoder)
    problems: list[str] = []

    def one(token: str, where: str) -> int:
        tid = vocab.get(token)
        if tid is None:
            problems.append(f"{where}: {token!r} is not in the tokenizer")
            return -1
        if tid not in added:
            problems.append(f"{where}: {token!r} (id {tid}) is a text token, not an added token")
        return tid

    def named(role: str, names: Iterable[Any]) -> dict[Any, int]:
        template = cfg.token_templates[role]
        return {n: one(template.format(getattr(n, "value", n)), f"token_templates.{role}") for n in names}

    roles = {role: one(token, f"tokens.{role}") for role, token in cfg.tokens.items()}
    ranges = {}
    for r in CODE_RANGES:
        offset: int = getattr(cfg, r.offset_key)
        template = cfg.token_templates[r.template]
        for k in range(counts[r.name]):
            token = template.format(k)
            tid = one(token, r.offset_key)
            if tid >= 0 and tid != offset + k:
                problems.append(f"{r.offset_key} is {offset} but {token!r} has id {tid}, expected {offset + k}")
                break
        ranges[r.name] = (offset, counts[r.name])
    tokens = TokenMap(
        roles=roles,
        cameras=named("camera", cfg.cameras),
        actions=named("action", list(Action)),
        ipa=named("ipa", cfg.ipa_phones),
        script=named("script", [k.word for k in KEYWORDS]),
        ranges=ranges,
        bos=tokenizer.bos_token_id,
        pad=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else -1,
        added=added,
    )
    if cfg.add_bos_token and tokens.bos is None:
        problems.append("add_bos_token is true but the tokenizer has no bos_token")
    if tokens.pad < 0:
        problems.append("the tokenizer has no pad_token to pad batches with")
    if problems:
        raise ProcessorConfigError(
            f"{len(problems)} token problem(s) between {PROCESSOR_CONFIG} and the tokenizer: {'; '.join(problems)}",
            key="tokens",
            fix="point the config at the tokenizer's added tokens (offsets are the id of code 0) or add the tokens",
        )
    return tokens
