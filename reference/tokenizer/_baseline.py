"""Checks of a tokenizer package against the release it derives from (``--vla-baseline``).

A released token ID is a row of the embedding the weights were trained with. A new version or
a fine-tune may add tokens after the largest released ID, never move, drop or re-flag one; and
any change to any package file is a new release: a different tokenizer checksum needs a
different version.
"""

from __future__ import annotations

from pathlib import Path

from .._fs import MANIFEST
from ..findings import Finding
from ._build import tokenizer_checksum
from ._checks import package_digests
from ._package import TokenizerPackage

__all__ = ["moved_tokens", "token_changes", "tokens_below_baseline", "unversioned_change"]

_KEEP: str = (
    "restore the baseline's ID and flags (the weights map that ID to this token), add new tokens after "
    "the baseline's largest ID, and rebuild the package with write_tokenizer_package"
)


def moved_tokens(baseline: TokenizerPackage, candidate: TokenizerPackage) -> list[Finding]:
    """Every baseline token keeps its ID; every baseline added token keeps its flags.

    Example:
        >>> moved_tokens(read_tokenizer_package(base), read_tokenizer_package(ft))  # doctest: +SKIP
        []
    """
    path = candidate.path("tokenizer.json")
    added = {t.content: t for t in candidate.added}
    out = []
    tokens = sorted({*baseline.vocab, *(t.content for t in baseline.added)}, key=lambda t: min(baseline.ids_of(t)))
    for token in tokens:
        was, now = baseline.ids_of(token), candidate.ids_of(token)
        key = added[token].key if token in added else "model.vocab"
        if not now:
            out.append(
                Finding(
                    "baseline token removed",
                    f"{token!r} is absent",
                    f"ID {min(was)} as in the baseline",
                    path,
                    key,
                    _KEEP,
                )
            )
        elif now != was:
            out.append(
                Finding(
                    "baseline token moved",
                    f"{token!r} has ID {', '.join(map(str, sorted(now)))}",
                    f"{', '.join(map(str, sorted(was)))} as in the baseline",
                    path,
                    key,
                    _KEEP,
                )
            )
    for t in baseline.added:
        mine = added.get(t.content)
        if mine is None or mine.flags is None or t.flags is None:
            continue
        for flag, now_flag, was_flag in mine.flags.changes(t.flags):
            out.append(
                Finding(
                    "baseline token flag changed",
                    f"{t.content!r} {flag}={str(now_flag).lower()}",
                    f"{str(was_flag).lower()} as in the baseline",
                    path,
                    f"{mine.key}.{flag}",
                    _KEEP,
                )
            )
    return out


def token_changes(baseline: TokenizerPackage, candidate: TokenizerPackage) -> list[dict[str, object]]:
    """The token-ID table of a candidate against its baseline: every token whose IDs or flags
    differ, and every token the baseline does not have (``change``: ``removed``, ``moved``,
    ``flags``, ``added``), in ID order. Empty when the vocabularies are the same.

    Example:
        >>> token_changes(read_tokenizer_package(base), read_tokenizer_package(ft))  # doctest: +SKIP
        [{'token': '<act_9>', 'baseline_ids': [], 'release_ids': [1034], 'change': 'added', ...}]
    """
    rows: list[tuple[int, str, dict[str, object]]] = []
    was_added = {t.content: t for t in baseline.added}
    now_added = {t.content: t for t in candidate.added}
    for token in {*baseline.vocab, *was_added, *candidate.vocab, *now_added}:
        was, now = sorted(baseline.ids_of(token)), sorted(candidate.ids_of(token))
        flags = []
        a, b = was_added.get(token), now_added.get(token)
        if a is not None and b is not None and a.flags is not None and b.flags is not None:
            flags = [f"{flag}: {str(old).lower()} -> {str(new).lower()}" for flag, new, old in b.flags.changes(a.flags)]
        change = "added" if not was else "removed" if not now else "moved" if was != now else "flags" if flags else None
        if change is not None:
            row: dict[str, object] = {
                "token": token,
                "baseline_ids": was,
                "release_ids": now,
                "change": change,
                "flags": flags,
            }
            rows.append((min(now or was), token, row))
    return [row for _, _, row in sorted(rows, key=lambda r: r[:2])]


def tokens_below_baseline(baseline: TokenizerPackage, candidate: TokenizerPackage) -> list[Finding]:
    """Tokens new since the baseline take IDs after the baseline's largest ID."""
    limit = baseline.max_id
    if limit is None:
        return []
    known = {*baseline.vocab, *(t.content for t in baseline.added)}
    added = {t.content: t.key for t in candidate.added}
    out = []
    for token in sorted({*candidate.vocab, *added} - known, key=lambda t: min(candidate.ids_of(t))):
        for i in sorted(candidate.ids_of(token)):
            if i <= limit:
                out.append(
                    Finding(
                        "new token inside the baseline's ID range",
                        f"{token!r} has ID {i}",
                        f"an ID above {limit} (the baseline's largest)",
                        candidate.path("tokenizer.json"),
                        added.get(token, "model.vocab"),
                        f"give it ID {limit + 1} or later (an ID the baseline left free was trained as "
                        "something else, or not at all), then rebuild the package with write_tokenizer_package",
                    )
                )
    return out


def unversioned_change(
    baseline_root: Path, candidate_root: Path, baseline_version: str, candidate_version: str
) -> list[Finding]:
    """If the tokenizer checksum differs from the baseline's, so does the version.

    The changed files are named, by comparing each package file's SHA-256.
    """
    if tokenizer_checksum(baseline_root) == tokenizer_checksum(candidate_root):
        return []
    if baseline_version != candidate_version:
        return []
    was, now = package_digests(baseline_root / "model"), package_digests(candidate_root / "model")
    changed = [
        f"model/{name} ({'added' if name not in was else 'removed' if name not in now else 'edited'})"
        for name in sorted(set(was) | set(now))
        if was.get(name) != now.get(name)
    ]
    return [
        Finding(
            "tokenizer changed without a new version",
            f"version {candidate_version}, the baseline's; changed: {', '.join(changed)}",
            "a new version (any tokenizer change is a new release)",
            candidate_root / MANIFEST,
            "version",
            "bump the version (release.json and the model card), then run `vla-release manifest`; "
            "or ship the baseline's tokenizer files unchanged",
        )
    ]
