"""Tokenizer conformance: the package is whole and checksummed, its files agree, its IDs load as written.

Weights and tokenizer are one unit: an ID that moves points at another embedding row, and
nothing raises. See docs/tokenizer.md for each check and the usual fix.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import pytest

from pytest_vla.findings import Findings
from pytest_vla.results import measure
from pytest_vla.rules import rule
from pytest_vla.snapshots import skip_while_updating
from vla_reference.errors import ReleaseError
from vla_reference.findings import Finding
from vla_reference.release import Release
from vla_reference.tokenizer import (
    CROSS_FILES,
    GOLDEN_TEXT,
    ROUND_TRIP_CONTEXTS,
    TOKENIZER_FILES,
    TokenizerPackage,
    checksum_mismatches,
    cross_file_mismatches,
    duplicate_ids,
    embedding_rows,
    embedding_shortfalls,
    encoding_disagreements,
    id_gaps,
    missing_files,
    moved_tokens,
    one_id_failures,
    renumbered,
    round_trip_failures,
    token_changes,
    tokens_below_baseline,
    unversioned_change,
    vocab_file_mismatches,
)

pytestmark = pytest.mark.tokenizer

VOCAB_FILES: Final = ("vocab.json", "merges.txt")


def _check(title: str, release: Release, mismatches: Iterable[Finding]) -> None:
    """Fail with every mismatch as a finding line."""
    __tracebackhide__ = True
    findings = Findings(title, release.root)
    findings.extend(mismatches)
    findings.check()


def _need_tokenizer_json(pkg: TokenizerPackage) -> None:
    if not pkg.readable("tokenizer.json"):
        pytest.skip(f"no readable {pkg.path('tokenizer.json')} (reported by test_package_complete)")


def _encoder(tok: Any) -> tuple[Any, Any]:
    """encode/decode of a tokenizers.Tokenizer, special tokens kept."""
    return (lambda s: tok.encode(s).ids, lambda ids: tok.decode(ids, skip_special_tokens=False))


@pytest.fixture
def hf_tokenizer(vla_tokenizer_package: TokenizerPackage, request: pytest.FixtureRequest) -> Any:
    """``vla_tokenizer`` for the checks that compare transformers with the package, skipped when
    it cannot load: one defect, one failure (test_package_complete or test_transformers_loads_the_tokenizer
    names it) rather than an error in every check that uses it."""
    if missing_files(vla_tokenizer_package):
        # Why skip: test_package_complete fails on the missing or unreadable file, naming it.
        pytest.skip("the tokenizer package is incomplete or unreadable (reported by test_package_complete)")
    try:
        return request.getfixturevalue("vla_tokenizer")
    except pytest.fail.Exception as e:
        # Why skip: test_transformers_loads_the_tokenizer fails on this load error, naming the directory.
        pytest.skip(f"transformers cannot load the tokenizer (reported by test_transformers_loads_the_tokenizer): {e}")


@rule(
    "VLA-TOK-001",
    fix=(
        "make AutoTokenizer.from_pretrained(model/) load: rebuild the package with "
        "vla_reference.tokenizer.write_tokenizer_package"
    ),
)
def test_transformers_loads_the_tokenizer(
    vla_release: Release, vla_tokenizer_package: TokenizerPackage, request: pytest.FixtureRequest
) -> None:
    """tokenizers and transformers.AutoTokenizer load the package and encode with it without
    crashing (when every file of it is present and parses)."""
    if missing_files(vla_tokenizer_package):
        # Why skip: test_package_complete fails on the missing or unreadable file, naming it.
        pytest.skip("the tokenizer package is incomplete or unreadable (reported by test_package_complete)")
    try:
        vla_tokenizer_package.load()  # tokenizer.json alone, as a non-transformers runtime loads it
    except ReleaseError as e:
        Findings("tokenizer package", vla_release.root).fail_on(e, "tokenizers cannot use it")
    request.getfixturevalue("vla_tokenizer")  # fails naming the directory and transformers' error


@rule(
    "VLA-TOK-002",
    fix=(
        "ship all six package files (tokenizer.json, vocab.json, merges.txt, special_tokens_map.json, "
        "added_tokens.json, tokenizer_config.json)"
    ),
)
def test_package_complete(vla_release: Release, vla_tokenizer_package: TokenizerPackage) -> None:
    """The six package files are present and parse (transformers 5 saves only two of them)."""
    _check("tokenizer package", vla_release, missing_files(vla_tokenizer_package))


@rule("VLA-TOK-003", fix="after a deliberate tokenizer change: in the release: `vla-release manifest .`")
def test_checksum_matches_manifest(
    vla_release: Release, vla_manifest: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    """The tokenizer checksum recomputed from the package files equals release.json's tokenizer_checksum."""
    skip_while_updating(request.config)
    _check("tokenizer checksum", vla_release, checksum_mismatches(vla_release.root, vla_manifest))


@rule("VLA-TOK-004", fix="rebuild the package from tokenizer.json so that every file states the same IDs")
@pytest.mark.parametrize("name", CROSS_FILES)
def test_ids_agree_across_files(name: str, vla_release: Release, vla_tokenizer_package: TokenizerPackage) -> None:
    """What this file says about token IDs and bos/eos/pad/unk agrees with tokenizer.json and the other files."""
    pkg = vla_tokenizer_package
    _need_tokenizer_json(pkg)
    if name not in pkg.present:
        pytest.skip(
            f"no {pkg.path(name)}" + (" (reported by test_package_complete)" if name in TOKENIZER_FILES else "")
        )
    if name in pkg.errors:
        if name in TOKENIZER_FILES:
            pytest.skip(f"{pkg.path(name)} unreadable (reported by test_package_complete)")
        findings = Findings(f"IDs in {name}", vla_release.root)
        findings.add_error(pkg.errors[name], f"{name} unreadable")
        findings.check()
    _check(f"IDs in {name}", vla_release, cross_file_mismatches(pkg, name))


@rule("VLA-TOK-005", fix="give every token one ID in tokenizer.json")
def test_ids_unique(vla_release: Release, vla_tokenizer_package: TokenizerPackage) -> None:
    """In tokenizer.json no two tokens share an ID and no token has two."""
    _need_tokenizer_json(vla_tokenizer_package)
    _check("unique token IDs", vla_release, duplicate_ids(vla_tokenizer_package))


@rule("VLA-TOK-006", fix="renumber the added tokens to follow the base vocabulary without holes")
def test_ids_contiguous(vla_release: Release, vla_tokenizer_package: TokenizerPackage) -> None:
    """The IDs run from 0 to the largest without a hole: added tokens follow the base vocabulary."""
    _need_tokenizer_json(vla_tokenizer_package)
    _check("contiguous token IDs", vla_release, id_gaps(vla_tokenizer_package))


@rule("VLA-TOK-007", fix="fix the files a loader reads differently from tokenizer.json (the message names them)")
def test_loaded_ids_equal_written_ids(
    vla_release: Release, vla_tokenizer_package: TokenizerPackage, vla_raw_tokenizer: Any, hf_tokenizer: Any
) -> None:
    """tokenizers and transformers load every added token with the ID tokenizer.json writes."""
    pkg = vla_tokenizer_package
    if duplicate_ids(pkg) or id_gaps(pkg):
        pytest.skip(
            "the written IDs are not unique and contiguous, so a loader must move some "
            "(reported by test_ids_unique and test_ids_contiguous)"
        )
    mismatches = renumbered(pkg, vla_raw_tokenizer.token_to_id, "tokenizers")
    mismatches += renumbered(pkg, hf_tokenizer.convert_tokens_to_ids, "transformers")
    _check("loaded vs written IDs", vla_release, mismatches)


@rule("VLA-TOK-008", fix="regenerate vocab.json and merges.txt from tokenizer.json")
@pytest.mark.parametrize("name", VOCAB_FILES)
def test_vocab_files_match_tokenizer_json(
    name: str, vla_release: Release, vla_tokenizer_package: TokenizerPackage
) -> None:
    """vocab.json and merges.txt hold exactly the BPE model of tokenizer.json."""
    pkg = vla_tokenizer_package
    _need_tokenizer_json(pkg)
    if not pkg.is_bpe:
        pytest.skip(f"the tokenizer model is {pkg.model_type!r}, not a BPE: no {name}")
    if not pkg.readable(name):
        pytest.skip(f"no readable {pkg.path(name)} (reported by test_package_complete)")
    _check(f"{name} vs tokenizer.json", vla_release, vocab_file_mismatches(pkg, name))


@rule("VLA-TOK-009", fix="grow the embedding (and output layer) to cover every token ID, or drop the tokens past it")
def test_embedding_covers_every_id(
    vla_release: Release, vla_model_dir: Path, vla_tokenizer_package: TokenizerPackage, vla_raw_tokenizer: Any
) -> None:
    """Largest token ID + 1 <= the embedding rows, in config.json and in the input and output tensors."""
    pkg = vla_tokenizer_package
    needed = max((pkg.max_id or 0) + 1, vla_raw_tokenizer.get_vocab_size(with_added_tokens=True))
    token = vla_raw_tokenizer.id_to_token(needed - 1)
    try:
        rows = embedding_rows(vla_model_dir)
    except ReleaseError as e:
        Findings("embedding rows", vla_release.root).fail_on(e, "model unreadable")
    _check(
        "embedding rows", vla_release, embedding_shortfalls(rows, needed, f"largest token ID {needed - 1}: {token!r}")
    )


@rule("VLA-TOK-010", fix="mark the token special and not normalized so that it encodes to its one ID")
def test_special_tokens_encode_to_one_id(
    vla_release: Release, vla_tokenizer_package: TokenizerPackage, vla_raw_tokenizer: Any
) -> None:
    """Every token a package file declares special encodes alone to exactly one ID that decodes back to it."""
    _check("special tokens", vla_release, one_id_failures(vla_tokenizer_package, *_encoder(vla_raw_tokenizer)))


@rule("VLA-TOK-011", fix="make the token decode to itself (special, not normalized, no byte-level mangling)")
@pytest.mark.parametrize("context", ROUND_TRIP_CONTEXTS)
def test_special_tokens_round_trip(
    context: str, vla_release: Release, vla_tokenizer_package: TokenizerPackage, vla_raw_tokenizer: Any
) -> None:
    """Next to whitespace, inside a word, repeated: each special token stays one ID and the text decodes back."""
    mismatches = round_trip_failures(vla_tokenizer_package, context, *_encoder(vla_raw_tokenizer))
    _check(f"round trip {context}", vla_release, mismatches)


@rule("VLA-TOK-012", fix="remove the tokenizer_config.json settings that make transformers encode differently")
@pytest.mark.parametrize("text", GOLDEN_TEXT)
def test_transformers_agrees_with_tokenizers(
    text: str,
    vla_release: Release,
    vla_tokenizer_package: TokenizerPackage,
    vla_raw_tokenizer: Any,
    hf_tokenizer: Any,
) -> None:
    """transformers.AutoTokenizer encodes and decodes the golden text exactly as tokenizers.Tokenizer does."""
    theirs = (
        lambda s: list(hf_tokenizer(s)["input_ids"]),
        lambda ids: hf_tokenizer.decode(ids, skip_special_tokens=False),
    )
    mismatches = encoding_disagreements(
        vla_tokenizer_package, {text: GOLDEN_TEXT[text]}, _encoder(vla_raw_tokenizer), theirs
    )
    _check("transformers vs tokenizers", vla_release, mismatches)


def _need_both(candidate: TokenizerPackage, baseline: TokenizerPackage) -> None:
    _need_tokenizer_json(candidate)
    if not baseline.readable("tokenizer.json"):
        pytest.skip(f"no readable {baseline.path('tokenizer.json')} in the baseline")


@rule("VLA-TOK-013", fix="keep every baseline token at its ID with its flags; add new tokens after them")
def test_baseline_tokens_keep_ids_and_flags(
    vla_release: Release,
    vla_tokenizer_package: TokenizerPackage,
    vla_baseline_tokenizer_package: TokenizerPackage,
    request: pytest.FixtureRequest,
) -> None:
    """Every baseline token keeps its ID and its flags (special, single_word, lstrip, rstrip, normalized)."""
    _need_both(vla_tokenizer_package, vla_baseline_tokenizer_package)
    measure(request.node, "token_changes", token_changes(vla_baseline_tokenizer_package, vla_tokenizer_package))
    _check("tokens vs baseline", vla_release, moved_tokens(vla_baseline_tokenizer_package, vla_tokenizer_package))


@rule("VLA-TOK-014", fix="give new tokens IDs above the baseline's largest")
def test_new_tokens_after_baseline(
    vla_release: Release,
    vla_tokenizer_package: TokenizerPackage,
    vla_baseline_tokenizer_package: TokenizerPackage,
) -> None:
    """Tokens the baseline does not have take IDs after the baseline's largest."""
    _need_both(vla_tokenizer_package, vla_baseline_tokenizer_package)
    mismatches = tokens_below_baseline(vla_baseline_tokenizer_package, vla_tokenizer_package)
    _check("new tokens vs baseline", vla_release, mismatches)


@rule("VLA-TOK-015", fix="bump the version (minor at least) for a tokenizer change")
def test_tokenizer_change_bumps_version(vla_release: Release, vla_baseline: Release) -> None:
    """A tokenizer whose checksum differs from the baseline's comes with a different version."""
    mismatches = unversioned_change(vla_baseline.root, vla_release.root, vla_baseline.version, vla_release.version)
    _check("tokenizer version", vla_release, mismatches)
