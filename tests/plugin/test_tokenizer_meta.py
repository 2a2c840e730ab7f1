"""Every tokenizer check can fail: on a release broken one way, exactly that check fails, naming the place."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from vla_reference.release import tokenizer_checksum
from vla_reference.tokenizer import build_tokenizer

GOLDEN = Path(__file__).resolve().parents[2] / "golden"  # not via conftest: nested conftests shadow it

MODEL = "model"
NEW_TOKENS = ("<|act:reverse|>", "<|act:park|>")
SIZE = json.loads((GOLDEN / "dense/model/config.json").read_text())["vocab_size"]


def edit_json(path: Path, edit: Callable[[Any], object]) -> None:
    """Apply ``edit`` to the parsed file in place and write it back."""
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    write_json(path, data)


def write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def restamp(release: Path) -> None:
    """Record the new tokenizer checksum, as `vla-release manifest` would (the key this area reads)."""
    edit_json(release / "release.json", lambda m: m.update(tokenizer_checksum=tokenizer_checksum(release)))


def bump(release: Path, version: str = "1.1.0") -> None:
    edit_json(release / "release.json", lambda m: m.update(version=version))


def model(release: Path, name: str) -> Path:
    return release / MODEL / name


def entry(tokenizer_json: dict, content: str) -> dict:
    return next(t for t in tokenizer_json["added_tokens"] if t["content"] == content)


def set_flag(release: Path, content: str, flag: str, value: bool) -> None:
    """Change a flag of an added token in tokenizer.json and tokenizer_config.json alike."""
    edit_json(model(release, "tokenizer.json"), lambda d: entry(d, content).update({flag: value}))

    def config(d: dict) -> None:
        next(e for e in d["added_tokens_decoder"].values() if e["content"] == content)[flag] = value

    edit_json(model(release, "tokenizer_config.json"), config)


def swap_contents(release: Path, a: str, b: str) -> None:
    """Give ``a`` the ID of ``b`` and back, in every file and in tokenizer.json's list order."""

    def tokenizer(d: dict) -> None:
        ea, eb = entry(d, a), entry(d, b)
        ea["content"], eb["content"] = b, a

    def added(d: dict) -> None:
        d[a], d[b] = d[b], d[a]

    def config(d: dict) -> None:
        for e in d["added_tokens_decoder"].values():
            e["content"] = {a: b, b: a}.get(e["content"], e["content"])

    edit_json(model(release, "tokenizer.json"), tokenizer)
    edit_json(model(release, "added_tokens.json"), added)
    edit_json(model(release, "tokenizer_config.json"), config)


def swap_ids_keep_order(release: Path) -> None:
    """Every file says <|image|> is 321 and <|image_start|> 320; tokenizer.json still lists <|image|> first."""

    def tokenizer(d: dict) -> None:
        ea, eb = entry(d, "<|image|>"), entry(d, "<|image_start|>")
        ea["id"], eb["id"] = eb["id"], ea["id"]

    def added(d: dict) -> None:
        d["<|image|>"], d["<|image_start|>"] = d["<|image_start|>"], d["<|image|>"]

    def config(d: dict) -> None:
        dec = d["added_tokens_decoder"]
        dec["320"], dec["321"] = dec["321"], dec["320"]

    edit_json(model(release, "tokenizer.json"), tokenizer)
    edit_json(model(release, "added_tokens.json"), added)
    edit_json(model(release, "tokenizer_config.json"), config)
    restamp(release)


def swap_in_added_tokens_json(release: Path) -> None:
    edit_json(model(release, "added_tokens.json"), lambda d: d.update({"<|image|>": 321, "<|image_start|>": 320}))
    restamp(release)


def drop_token(release: Path, token: str = "<|t_31|>") -> None:
    """Remove one token from every file, leaving its ID unused (the IDs after it unchanged)."""
    edit_json(
        model(release, "tokenizer.json"),
        lambda d: d.update(added_tokens=[t for t in d["added_tokens"] if t["content"] != token]),
    )
    edit_json(model(release, "added_tokens.json"), lambda d: d.pop(token))
    edit_json(
        model(release, "special_tokens_map.json"),
        lambda d: d["additional_special_tokens"].remove(token),
    )

    def config(d: dict) -> None:
        d["extra_special_tokens"].remove(token)
        d["added_tokens_decoder"] = {k: v for k, v in d["added_tokens_decoder"].items() if v["content"] != token}

    edit_json(model(release, "tokenizer_config.json"), config)
    restamp(release)


def duplicate_id(release: Path) -> None:
    """<|action_bin_31|> gets <|action_bin_30|>'s ID 547, written as a builder keyed by ID would."""
    edit_json(model(release, "tokenizer.json"), lambda d: entry(d, "<|action_bin_31|>").update(id=547))
    edit_json(model(release, "added_tokens.json"), lambda d: d.update({"<|action_bin_31|>": 547}))

    def config(d: dict) -> None:
        d["added_tokens_decoder"]["547"] = d["added_tokens_decoder"].pop("548")

    edit_json(model(release, "tokenizer_config.json"), config)
    restamp(release)


def reorder_added_tokens(release: Path) -> None:
    """Same content, another order: every ID as before, but the bytes (and checksum) change."""
    path = model(release, "added_tokens.json")
    write_json(path, dict(reversed(json.loads(path.read_text(encoding="utf-8")).items())))


def remove_file(name: str) -> Callable[[Path], None]:
    def remove(release: Path) -> None:
        model(release, name).unlink()
        restamp(release)

    return remove


def saved_by_transformers_5(release: Path) -> None:
    for name in ("vocab.json", "merges.txt", "special_tokens_map.json", "added_tokens.json"):
        model(release, name).unlink()
    restamp(release)


def map_eos_is_pad(release: Path) -> None:
    edit_json(model(release, "special_tokens_map.json"), lambda d: d.update(eos_token="<|pad|>"))
    restamp(release)


def config_pad_is_bos(release: Path) -> None:
    edit_json(model(release, "config.json"), lambda d: d.update(pad_token_id=0))


def vocab_json_swapped(release: Path) -> None:
    edit_json(model(release, "vocab.json"), lambda d: d.update({"he": d["Ġt"], "Ġt": d["he"]}))
    restamp(release)


def merges_reordered(release: Path) -> None:
    path = model(release, "merges.txt")
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[1], lines[2] = lines[2], lines[1]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    restamp(release)


def add_tokens(release: Path) -> None:
    """A tokenizer with two more tokens, the model left as it was (no resize_token_embeddings)."""
    build_tokenizer(model(release, ""), extra_tokens=NEW_TOKENS)
    restamp(release)


def grow_embeddings(release: Path, rows: int) -> None:
    f = model(release, "model.safetensors")
    tensors = load_file(f)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        t = tensors[name]
        tensors[name] = torch.cat([t, torch.zeros(rows, t.shape[1], dtype=t.dtype)])
    save_file(tensors, f, metadata={"format": "pt"})
    edit_json(model(release, "config.json"), lambda d: d.update(vocab_size=d["vocab_size"] + rows))


def declare_undefined_special(release: Path) -> None:
    edit_json(
        model(release, "special_tokens_map.json"), lambda d: d["additional_special_tokens"].append("<|act:reverse|>")
    )
    restamp(release)


def single_word_image(release: Path) -> None:
    set_flag(release, "<|image|>", "single_word", True)
    restamp(release)


def config_only_lstrip(release: Path) -> None:
    """tokenizer_config.json strips left of <|image|>, tokenizer.json does not: only transformers applies it."""
    edit_json(model(release, "tokenizer_config.json"), lambda d: d["added_tokens_decoder"]["320"].update(lstrip=True))
    restamp(release)


def unbuildable_tokenizer_class(release: Path) -> None:
    """Every file parses, but tokenizer_config.json names a class that cannot be built from this package
    (T5Tokenizer wants a SentencePiece vocabulary; transformers raises TypeError on the BPE one)."""
    edit_json(model(release, "tokenizer_config.json"), lambda d: d.update(tokenizer_class="T5Tokenizer"))
    restamp(release)


def config_not_json(release: Path) -> None:
    """tokenizer_config.json cut short: AutoTokenizer cannot load, and neither can any check that uses it."""
    f = model(release, "tokenizer_config.json")
    f.write_bytes(f.read_bytes()[:100])
    restamp(release)


BREAKS = {
    "tokenizer-class-unbuildable": (
        unbuildable_tokenizer_class,
        ["test_transformers_loads_the_tokenizer"],
        r"transformers cannot load the tokenizer: .* \[.*/model\]",
    ),
    "tokenizer-config-unparsable": (
        config_not_json,
        ["test_package_complete"],  # one defect, one failure: the transformers checks skip
        r"tokenizer package file unreadable: .*\[model/tokenizer_config.json\]",
    ),
    "file-missing": (
        remove_file("added_tokens.json"),
        ["test_package_complete"],
        r"tokenizer package file missing: absent, expected added_tokens.json: .* \[model/added_tokens.json\]\. "
        r"Fix: write the whole package with vla_reference.tokenizer.write_tokenizer_package",
    ),
    "saved-by-transformers-5": (
        saved_by_transformers_5,
        ["test_package_complete"],
        r"4 finding\(s\).*\[model/vocab.json\].*\[model/merges.txt\].*\[model/special_tokens_map.json\]"
        r".*transformers 5's save_pretrained writes only tokenizer.json and tokenizer_config.json",
    ),
    "file-edited-without-new-checksum": (
        reorder_added_tokens,
        ["test_checksum_matches_manifest"],
        r"tokenizer checksum differs: sha256:[0-9a-f]{64}; changed since the manifest: model/added_tokens.json "
        r"\(edited\), expected sha256:[0-9a-f]{64} \[release.json:tokenizer_checksum\]\. Fix: if the change is "
        r"intended, release it as a new version",
    ),
    "ids-swapped-everywhere-but-list-order": (
        swap_ids_keep_order,
        ["test_loaded_ids_equal_written_ids"],
        r"tokenizers loads an added token with another ID: '<\|image\|>' loads as 320, expected 321 as written "
        r"\[model/tokenizer.json:added_tokens\[4\]\.id\]\. Fix: list added_tokens in ID order.*"
        r"transformers loads an added token with another ID: '<\|image\|>' loads as 320",
    ),
    "ids-swapped-in-added-tokens-json": (
        swap_in_added_tokens_json,
        ["test_ids_agree_across_files[added_tokens.json]"],
        r"token ID differs from tokenizer.json: '<\|image\|>' has ID 321, expected 320 as in tokenizer.json "
        r"\[model/added_tokens.json:<\|image\|>\]\. Fix: correct added_tokens.json, or rebuild the package",
    ),
    "gap": (
        drop_token,
        ["test_ids_contiguous"],
        r"gap in the token IDs: no token has ID 369 \(between '<\|t_30\|>' = 368 and '<\|ipa_a\|>' = 370\), "
        r"expected contiguous IDs: base vocabulary 0\.\.319, then the added tokens "
        r"\[model/tokenizer.json:added_tokens\[53\]\]\. Fix: number the added tokens without holes",
    ),
    "duplicate": (
        duplicate_id,
        ["test_ids_unique"],
        r"ID shared by several tokens: ID 547 is '<\|action_bin_30\|>', '<\|action_bin_31\|>', expected one token "
        r"per ID \[model/tokenizer.json:added_tokens\[232\]\]\. Fix: give every token one ID of its own",
    ),
    "special-map-disagrees-with-config": (
        map_eos_is_pad,
        ["test_ids_agree_across_files[special_tokens_map.json]"],
        r"eos token disagrees with the other files: eos_token = '<\|pad\|>' \(ID 2\), expected ID 1 "
        r"\(<\|end_of_text\|>\) as in tokenizer_config.json, config.json, generation_config.json "
        r"\[model/special_tokens_map.json:eos_token\]\. Fix: set eos_token to '<\|end_of_text\|>'",
    ),
    "config-pad-id-disagrees-with-tokenizer": (
        config_pad_is_bos,
        ["test_ids_agree_across_files[config.json]"],
        r"pad token disagrees with the other files: pad_token_id = 0 \(<\|begin_of_text\|>\), expected ID 2 "
        r"\(<\|pad\|>\) as in tokenizer_config.json, generation_config.json, special_tokens_map.json "
        r"\[model/config.json:pad_token_id\]\. Fix: set pad_token_id to 2",
    ),
    "vocab-json-differs": (
        vocab_json_swapped,
        ["test_vocab_files_match_tokenizer_json[vocab.json]"],
        r"vocab.json differs from tokenizer.json: 'Ġt' has ID \d+, expected \d+ as in tokenizer.json model.vocab "
        r"\[model/vocab.json:Ġt\]",
    ),
    "merges-reordered": (
        merges_reordered,
        ["test_vocab_files_match_tokenizer_json[merges.txt]"],
        r"merges.txt differs from tokenizer.json: merge 0 is 'Ġ t', expected 'h e' as in tokenizer.json "
        r"model.merges\[0\] \(merges are ranked by order\) \[model/merges.txt:line 2\]",
    ),
    "embedding-too-small": (
        add_tokens,
        ["test_embedding_covers_every_id"],
        rf"3 finding\(s\).*embedding too small for the tokenizer: {SIZE} rows, expected at least {SIZE + 2} "
        rf"\(largest token ID {SIZE + 1}: '<\|act:park\|>'\) \[model/config.json:vocab_size\]\. Fix: resize the "
        r"embeddings.*\[model/model.safetensors:model.embed_tokens.weight\].*\[model/model.safetensors:lm_head.weight\]",
    ),
    "special-token-not-in-tokenizer": (
        declare_undefined_special,
        ["test_special_tokens_encode_to_one_id"],
        r"special token is not one token: '<\|act:reverse\|>' encodes to \d+ IDs \[.*\], expected exactly one ID "
        r"\[model/special_tokens_map.json:additional_special_tokens\[229\]\]\. Fix: add '<\|act:reverse\|>' to "
        r"tokenizer.json's added_tokens",
    ),
    "special-token-single-word": (
        single_word_image,
        ["test_special_tokens_round_trip[inside-word]"],
        r"special token does not survive \(inside-word\): 'go<\|image\|>go' -> .* expected '<\|image\|>' \(ID 320\) "
        r"1 time\(s\) and the same text back \[model/tokenizer.json:added_tokens\[4\]\]\. Fix: clear single_word",
    ),
    "tokenizer-config-overrides-flags": (
        config_only_lstrip,
        ["test_transformers_agrees_with_tokenizers[whitespace]"],
        r"transformers.AutoTokenizer encodes the golden text 'whitespace' differently: IDs from position 21: "
        r"\[320, 320, .*\], expected \[224, 205, .*\] "
        r"\(tokenizers.Tokenizer\) \[model/tokenizer_config.json:added_tokens_decoder.320.lstrip\]\. Fix: make "
        r"tokenizer_config.json agree with tokenizer.json: '<\|image\|>' lstrip=True but False in tokenizer.json",
    ),
}


@pytest.mark.parametrize("name", BREAKS)
def test_exactly_the_intended_check_fails(name, golden_copy, run_suite):
    breaker, tests, message = BREAKS[name]
    release = golden_copy("dense")
    breaker(release)
    run = run_suite(release, "-m", "tokenizer")
    assert sorted(run.failed) == sorted(tests), run.failed
    assert re.search(message, run.failed[tests[0]], re.S), run.failed[tests[0]]
    for test in tests:
        run.assert_reported(test)


def new_version_with_tokens(release: Path) -> None:
    add_tokens(release)
    grow_embeddings(release, len(NEW_TOKENS))
    bump(release)
    restamp(release)


def flag_changed(release: Path) -> None:
    set_flag(release, "<|image|>", "normalized", True)
    bump(release)
    restamp(release)


def id_moved(release: Path) -> None:
    swap_contents(release, "<|act:stop|>", "<|act:slow_down|>")
    bump(release)
    restamp(release)


def new_version(release: Path) -> None:
    bump(release)


def edited_and_restamped(release: Path) -> None:
    reorder_added_tokens(release)
    restamp(release)


BASELINE_BREAKS = {
    "token-id-moved": (
        None,
        id_moved,
        ["test_baseline_tokens_keep_ids_and_flags"],
        r"baseline token moved: '<\|act:stop\|>' has ID 417, expected 416 as in the baseline "
        r"\[model/tokenizer.json:added_tokens\[101\]\]\. Fix: restore the baseline's ID and flags",
    ),
    "token-flag-changed": (
        None,
        flag_changed,
        ["test_baseline_tokens_keep_ids_and_flags"],
        r"baseline token flag changed: '<\|image\|>' normalized=true, expected false as in the baseline "
        r"\[model/tokenizer.json:added_tokens\[4\]\.normalized\]",
    ),
    "new-token-in-an-id-the-baseline-left-free": (
        drop_token,
        new_version,
        ["test_new_tokens_after_baseline"],
        r"new token inside the baseline's ID range: '<\|t_31\|>' has ID 369, expected an ID above 548 \(the "
        r"baseline's largest\) \[model/tokenizer.json:added_tokens\[53\]\]\. Fix: give it ID 549 or later",
    ),
    "tokenizer-edited-without-version-bump": (
        None,
        edited_and_restamped,
        ["test_tokenizer_change_bumps_version"],
        r"tokenizer changed without a new version: version 1.0.0, the baseline's; changed: "
        r"model/added_tokens.json \(edited\), expected a new version \(any tokenizer change is a new release\) "
        r"\[release.json:version\]\. Fix: bump the version",
    ),
}


@pytest.mark.parametrize("name", BASELINE_BREAKS)
def test_exactly_the_intended_baseline_check_fails(name, golden_copy, run_suite, tmp_path):
    break_baseline, break_candidate, tests, message = BASELINE_BREAKS[name]
    baseline = golden_copy("dense").rename(tmp_path / "baseline")
    candidate = golden_copy("dense")
    if break_baseline is not None:
        break_baseline(baseline)
    break_candidate(candidate)
    run = run_suite(candidate, "-m", "tokenizer", f"--vla-baseline={baseline}")
    assert sorted(run.failed) == sorted(tests), run.failed
    assert re.search(message, run.failed[tests[0]], re.S), run.failed[tests[0]]
    for test in tests:
        run.assert_reported(test)


def test_new_tokens_after_the_baseline_with_a_new_version_conform(golden_copy, run_suite, tmp_path):
    baseline = golden_copy("dense").rename(tmp_path / "baseline")
    candidate = golden_copy("dense")
    new_version_with_tokens(candidate)
    run = run_suite(candidate, "-m", "tokenizer", f"--vla-baseline={baseline}")
    assert not run.failed and not run.skipped, (run.failed, run.skipped)


@pytest.mark.parametrize("name", ["dense", "moe"])
def test_golden_releases_conform(name, run_suite):
    run = run_suite(GOLDEN / name, "-m", "tokenizer")
    assert not run.failed, run.failed
    assert sorted(run.skipped) == [
        "test_baseline_tokens_keep_ids_and_flags",
        "test_new_tokens_after_baseline",
        "test_tokenizer_change_bumps_version",
    ]
    assert len(run.passed) == 29  # test_transformers_loads_the_tokenizer among them


def test_a_release_is_its_own_baseline(run_suite):
    run = run_suite(GOLDEN / "dense", "-m", "tokenizer", f"--vla-baseline={GOLDEN / 'dense'}")
    assert not run.failed and not run.skipped, (run.failed, run.skipped)
    assert len(run.passed) == 32
