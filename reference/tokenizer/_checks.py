"""Checks of one tokenizer package: complete, checksummed, its files agree, its IDs load as written.

Each check is a function returning :class:`Finding` records (empty when the property holds);
the conformance suite turns them into findings::

    >>> pkg = read_tokenizer_package(Path("golden/dense/model"))        # doctest: +SKIP
    >>> cross_file_mismatches(pkg, "config.json") + id_gaps(pkg)        # doctest: +SKIP
    []

Where one defect would trip several checks, the dependent check leaves it to the one that
names its cause, and its docstring says so.

Facts these checks are built on (tokenizers 0.23, transformers 5):

- tokenizers assigns added-token IDs by position in tokenizer.json's ``added_tokens`` list on
  load, whatever ``id`` the file says (a gap closes, a duplicate moves, a swap is undone), and
  only logs it on the Rust side;
- transformers 5 reads tokenizer.json and tokenizer_config.json only (roles, ``extra_special_tokens``,
  the flags of ``added_tokens_decoder``, which it applies over tokenizer.json's); it ignores
  special_tokens_map.json and added_tokens.json, which other runtimes still read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from .._fs import MANIFEST, sha256_file
from ..findings import Finding
from ._build import PACKAGE_FILES, tokenizer_checksum
from ._package import MODEL_CONFIGS, FileClaims, TokenizerPackage

__all__ = [
    "CROSS_FILES",
    "ROLE_AUTHORITY",
    "REGENERATE",
    "missing_files",
    "checksum_mismatches",
    "cross_file_mismatches",
    "duplicate_ids",
    "id_gaps",
    "renumbered",
    "vocab_file_mismatches",
    "package_digests",
]

REGENERATE: Final = "rebuild the package from tokenizer.json (vla_reference.tokenizer.write_tokenizer_package)"

# the files whose statements about IDs are compared with tokenizer.json, in the order reported
CROSS_FILES: Final[tuple[str, ...]] = (
    "added_tokens.json",
    "special_tokens_map.json",
    "tokenizer_config.json",
    *MODEL_CONFIGS,
)
# files that must list every added token of tokenizer.json
_LISTS_EVERY_ADDED_TOKEN: Final = {"added_tokens.json": "", "tokenizer_config.json": "added_tokens_decoder"}
# when files disagree on a role's ID and votes tie, the earlier file wins (transformers 5 reads the first)
ROLE_AUTHORITY: Final[tuple[str, ...]] = (
    "tokenizer_config.json",
    "config.json",
    "generation_config.json",
    "special_tokens_map.json",
)


def missing_files(pkg: TokenizerPackage) -> list[Finding]:
    """Every package file is present and parses (vocab.json and merges.txt only for a BPE)."""
    out = []
    for f in PACKAGE_FILES:
        if f.bpe_only and pkg.model_type is not None and not pkg.is_bpe:
            continue
        if f.name not in pkg.present:
            out.append(
                Finding(
                    "tokenizer package file missing",
                    "absent",
                    f"{f.name}: {f.holds}",
                    pkg.path(f.name),
                    fix="write the whole package with vla_reference.tokenizer.write_tokenizer_package "
                    "(transformers 5's save_pretrained writes only tokenizer.json and tokenizer_config.json)",
                )
            )
        elif f.name in pkg.errors:
            out.append(Finding.from_error(pkg.errors[f.name], "tokenizer package file unreadable"))
    return out


def checksum_mismatches(root: Path, manifest: Mapping[str, Any]) -> list[Finding]:
    """The tokenizer checksum recomputed from the files equals ``release.json``'s.

    When it differs, the package files whose SHA-256 differs from the manifest's ``files``
    entry are named.
    """
    path = root / MANIFEST
    recorded = manifest.get("tokenizer_checksum")
    fix = "if the change is intended, release it as a new version and run `vla-release manifest`"
    if not isinstance(recorded, str) or not recorded.startswith("sha256:"):
        return [
            Finding(
                "tokenizer checksum not recorded",
                repr(recorded),
                "sha256:<64 hex digits>",
                path,
                "tokenizer_checksum",
                "run `vla-release manifest` to record it",
            )
        ]
    actual = tokenizer_checksum(root)
    if actual == recorded:
        return []
    files = manifest.get("files") if isinstance(manifest.get("files"), dict) else {}
    changed = []
    for f in PACKAGE_FILES:
        rel = f"model/{f.name}"
        entry = files.get(rel) if isinstance(files, dict) else None
        now = sha256_file(root / rel) if (root / rel).is_file() else None
        was = entry.get("sha256") if isinstance(entry, dict) else None
        if now != was:
            changed.append(f"{rel} ({'added' if was is None else 'removed' if now is None else 'edited'})")
    since = f"; changed since the manifest: {', '.join(changed)}" if changed else ""
    return [Finding("tokenizer checksum differs", f"{actual}{since}", recorded, path, "tokenizer_checksum", fix)]


def _role_votes(pkg: TokenizerPackage) -> dict[str, dict[int, list[str]]]:
    """role -> ID -> the files that give the role that ID (tokens resolved through tokenizer.json)."""
    votes: dict[str, dict[int, list[str]]] = {}
    for name in ROLE_AUTHORITY:
        for claim in pkg.claims.get(name, FileClaims()).roles:
            ids = claim.ids if claim.token is None else ((i,) if (i := pkg.id_of(claim.token)) is not None else ())
            for i in ids:
                votes.setdefault(claim.role, {}).setdefault(i, []).append(name)
    return votes


def _consensus(votes: Mapping[int, list[str]]) -> tuple[int, list[str]]:
    rank = {name: n for n, name in enumerate(ROLE_AUTHORITY)}
    best = min(votes, key=lambda i: (-len(votes[i]), min(rank[f] for f in votes[i])))
    return best, votes[best]


def _describe_id(pkg: TokenizerPackage, i: int) -> str:
    owners = sorted(pkg.owners.get(i, ()))
    return f"{i} ({', '.join(owners)})" if owners else f"{i} (no token)"


def cross_file_mismatches(pkg: TokenizerPackage, name: str) -> list[Finding]:
    """What ``name`` says about IDs agrees with tokenizer.json (IDs) and with the other files (roles).

    Token IDs are compared with tokenizer.json's, the file the loaders read. A role (bos, eos,
    pad, unk) takes the ID most files give it; a file that gives another is at fault. Tokens
    tokenizer.json gives several IDs are left to :func:`duplicate_ids`; tokens a file declares
    special that tokenizer.json does not define are left to :func:`one_id_failures`.
    """
    claims = pkg.claims.get(name, FileClaims())
    path = pkg.path(name)
    fix = f"correct {name}, or {REGENERATE}"
    out = []
    for w in claims.tokens:
        if pkg.ambiguous(w.content):
            continue
        written = pkg.id_of(w.content)
        if written is None:
            out.append(
                Finding(
                    "token not in tokenizer.json",
                    f"{w.content!r} with ID {w.id}",
                    "only tokens tokenizer.json defines",
                    path,
                    w.key,
                    fix,
                )
            )
        elif written != w.id:
            out.append(
                Finding(
                    "token ID differs from tokenizer.json",
                    f"{w.content!r} has ID {w.id}",
                    f"{written} as in tokenizer.json",
                    path,
                    w.key,
                    fix,
                )
            )
    if name in _LISTS_EVERY_ADDED_TOKEN:
        listed = {w.content for w in claims.tokens}
        for t in pkg.added:
            if t.content not in listed and not pkg.ambiguous(t.content):
                out.append(
                    Finding(
                        "added token not listed",
                        f"{t.content!r} (ID {t.id} in tokenizer.json) is absent",
                        "every added token",
                        path,
                        _LISTS_EVERY_ADDED_TOKEN[name] or None,
                        fix,
                    )
                )
    votes = _role_votes(pkg)
    for claim in claims.roles:
        if claim.role not in votes:
            continue
        agreed, by = _consensus(votes[claim.role])
        ids = claim.ids if claim.token is None else ((i,) if (i := pkg.id_of(claim.token)) is not None else None)
        if ids is None or agreed in ids:
            continue  # a role token tokenizer.json does not define: one_id_failures names it
        others = ", ".join(f for f in by if f != name)
        said = (
            f"{claim.key} = {claim.token!r} (ID {ids[0]})"
            if claim.token is not None
            else f"{claim.key} = {', '.join(_describe_id(pkg, i) for i in ids)}"
        )
        out.append(
            Finding(
                f"{claim.role} token disagrees with the other files",
                said,
                f"ID {_describe_id(pkg, agreed)} as in {others}",
                path,
                claim.key,
                f"set {claim.key} to {agreed if claim.token is None else repr(sorted(pkg.owners[agreed])[0])}",
            )
        )
    special = {t.content for t in pkg.added if t.flags is not None and t.flags.special}
    for s in claims.specials:
        if pkg.ids_of(s.token) and s.token not in special:
            out.append(
                Finding(
                    "listed as special but tokenizer.json does not mark it special",
                    repr(s.token),
                    "an added token with special: true",
                    path,
                    s.key,
                    fix,
                )
            )
    return out


def key_of(pkg: TokenizerPackage, token: str) -> str:
    return next((t.key for t in pkg.added if t.content == token), "model.vocab")


def duplicate_ids(pkg: TokenizerPackage) -> list[Finding]:
    """No ID belongs to two tokens, no token has two IDs, no added token is listed twice."""
    path = pkg.path("tokenizer.json")
    fix = (
        "give every token one ID of its own, new tokens after the largest ID, then "
        + REGENERATE
        + " (tokenizers silently moves a duplicate to its list position on load)"
    )
    out = []
    for i, owners in sorted(pkg.owners.items()):
        if len(owners) > 1:
            names = sorted(owners, key=lambda t: key_of(pkg, t))
            out.append(
                Finding(
                    "ID shared by several tokens",
                    f"ID {i} is {', '.join(map(repr, names))}",
                    "one token per ID",
                    path,
                    key_of(pkg, names[-1]),
                    fix,
                )
            )
    for token in sorted({t.content for t in pkg.added} | set(pkg.vocab)):
        ids = pkg.ids_of(token)
        if len(ids) > 1:
            out.append(
                Finding(
                    "token has several IDs",
                    f"{token!r} has IDs {sorted(ids)}",
                    "one ID per token",
                    path,
                    key_of(pkg, token),
                    fix,
                )
            )
    for token, n in sorted(Counter(t.content for t in pkg.added).items()):
        if n > 1:
            out.append(
                Finding("added token listed twice", f"{token!r} {n} times", "once", path, key_of(pkg, token), fix)
            )
    return out


def id_gaps(pkg: TokenizerPackage) -> list[Finding]:
    """The IDs of tokenizer.json run 0..max without a hole: added tokens follow the base vocabulary."""
    if pkg.max_id is None:
        return []
    path = pkg.path("tokenizer.json")
    out = []
    missing = sorted(set(range(pkg.max_id + 1)) - set(pkg.owners))
    runs: list[tuple[int, int]] = []
    for i in missing:
        if runs and runs[-1][1] == i - 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    for lo, hi in runs:
        before = sorted(pkg.owners.get(lo - 1, {"?"}))[0]
        after = sorted(pkg.owners[hi + 1])[0]
        span = f"ID {lo}" if lo == hi else f"IDs {lo}..{hi}"
        out.append(
            Finding(
                "gap in the token IDs",
                f"no token has {span} (between {before!r} = {lo - 1} and {after!r} = {hi + 1})",
                f"contiguous IDs: base vocabulary 0..{pkg.base_size - 1}, then the added tokens",
                path,
                key_of(pkg, after),
                "number the added tokens without holes, then " + REGENERATE + " (tokenizers closes the gap on load, "
                "shifting every later token onto another embedding row)",
            )
        )
    return out


def renumbered(pkg: TokenizerPackage, lookup: Callable[[str], int | None], loader: str) -> list[Finding]:
    """Every added token loads with the ID tokenizer.json writes (``lookup``: token -> loaded ID).

    Meaningful only when the written IDs are unique and contiguous (:func:`duplicate_ids`,
    :func:`id_gaps`): otherwise the loader must move some, and those checks name the cause.
    """
    out = []
    for t in pkg.added:
        loaded = lookup(t.content)
        if loaded != t.id:
            out.append(
                Finding(
                    f"{loader} loads an added token with another ID",
                    f"{t.content!r} loads as {loaded}",
                    f"{t.id} as written",
                    pkg.path("tokenizer.json"),
                    f"{t.key}.id",
                    "list added_tokens in ID order (tokenizers numbers them by list position on load, "
                    "whatever the file says), then " + REGENERATE,
                )
            )
    return out


def _vocab_json(pkg: TokenizerPackage, path: Path, fix: str) -> list[Finding]:
    mine, model = pkg.vocab_file or {}, pkg.vocab
    out = []
    for token in sorted(set(mine) | set(model), key=lambda t: (model.get(t, mine.get(t, -1)), t)):
        a, b = mine.get(token), model.get(token)
        if a != b:
            observed = f"{token!r} is absent" if a is None else f"{token!r} has ID {a}"
            expected = "absent, as in tokenizer.json" if b is None else f"{b} as in tokenizer.json model.vocab"
            out.append(Finding("vocab.json differs from tokenizer.json", observed, expected, path, token, fix))
    return out


def _merges_txt(pkg: TokenizerPackage, path: Path, fix: str) -> list[Finding]:
    mine, model = pkg.merges_file or (), pkg.merges or ()
    out = []
    for n, (a, b) in enumerate(zip(mine, model, strict=False)):
        if a != b:
            out.append(
                Finding(
                    "merges.txt differs from tokenizer.json",
                    f"merge {n} is {' '.join(a)!r}",
                    f"{' '.join(b)!r} as in tokenizer.json model.merges[{n}] (merges are ranked by order)",
                    path,
                    f"line {pkg.merges_file_lines[n]}",
                    fix,
                )
            )
            break  # every later rank is shifted too: the first difference is the one to read
    if len(mine) != len(model):
        out.append(
            Finding("merges.txt differs from tokenizer.json", f"{len(mine)} merges", f"{len(model)}", path, None, fix)
        )
    return out


_VOCAB_FILE_CHECKS: Final = {"vocab.json": _vocab_json, "merges.txt": _merges_txt}


def vocab_file_mismatches(pkg: TokenizerPackage, name: str) -> list[Finding]:
    """vocab.json or merges.txt holds exactly the model of tokenizer.json."""
    return _VOCAB_FILE_CHECKS[name](pkg, pkg.path(name), f"correct {name}, or {REGENERATE}")


def package_digests(model_dir: Path) -> dict[str, str]:
    """SHA-256 of each package file present in ``model_dir``."""
    return {f.name: sha256_file(model_dir / f.name) for f in PACKAGE_FILES if (model_dir / f.name).is_file()}
