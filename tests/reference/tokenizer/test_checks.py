"""Reading a tokenizer package file by file, and the checks over it (no pytest plugin involved)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vla_reference.tokenizer import (
    CROSS_FILES,
    GOLDEN_TEXT,
    MODEL_CONFIGS,
    ROLE_AUTHORITY,
    ROUND_TRIP_CONTEXTS,
    TOKENIZER_FILES,
    TokenFlags,
    checksum_mismatches,
    cross_file_mismatches,
    duplicate_ids,
    embedding_rows,
    embedding_shortfalls,
    id_gaps,
    missing_files,
    moved_tokens,
    read_tokenizer_package,
    renumbered,
    token_changes,
    tokens_below_baseline,
    transformers_overrides,
    unversioned_change,
)

GOLDEN = Path(__file__).resolve().parents[3] / "golden"  # not via conftest: nested conftests shadow it

DENSE = GOLDEN / "dense"


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """The golden package and model configs, without the weights."""
    out = tmp_path / "release" / "model"
    out.mkdir(parents=True)
    for name in (*TOKENIZER_FILES, *MODEL_CONFIGS):
        shutil.copy(DENSE / "model" / name, out / name)
    return out


def edit(path: Path, change) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def test_the_tables_are_consistent():
    assert sorted(ROLE_AUTHORITY) == sorted(set(CROSS_FILES) - {"added_tokens.json"})  # the files that name roles
    assert all(t.count("{t}") >= 1 for t in ROUND_TRIP_CONTEXTS.values())
    assert all(name == name.lower() and " " not in name for name in (*ROUND_TRIP_CONTEXTS, *GOLDEN_TEXT))  # test IDs


def test_the_golden_package_reads_cleanly_and_agrees():
    pkg = read_tokenizer_package(DENSE / "model")
    assert not pkg.errors and pkg.is_bpe
    assert pkg.present == {*TOKENIZER_FILES, *MODEL_CONFIGS}
    assert pkg.id_of("<|image|>") == pkg.base_size == 320
    assert not missing_files(pkg) and not duplicate_ids(pkg) and not id_gaps(pkg)
    assert all(not cross_file_mismatches(pkg, name) for name in CROSS_FILES)
    assert not transformers_overrides(pkg)


def test_an_unparsable_file_is_kept_as_an_error(model_dir):
    (model_dir / "added_tokens.json").write_text("{not json", encoding="utf-8")
    pkg = read_tokenizer_package(model_dir)
    assert "added_tokens.json" in pkg.present and not pkg.readable("added_tokens.json")
    [m] = missing_files(pkg)
    assert m.what == "tokenizer package file unreadable" and m.path == model_dir / "added_tokens.json"
    assert "not valid JSON" in m.observed


def test_a_badly_shaped_file_names_the_key(model_dir):
    edit(model_dir / "tokenizer.json", lambda d: d["added_tokens"][4].update(id="320"))
    pkg = read_tokenizer_package(model_dir)
    err = pkg.errors["tokenizer.json"]
    assert err.key == "added_tokens[4].id" and "expected an integer ID, found '320'" in err.detail


def test_a_non_bpe_model_needs_no_vocab_json_or_merges(model_dir):
    edit(model_dir / "tokenizer.json", lambda d: d["model"].update(type="WordLevel"))
    for name in ("vocab.json", "merges.txt"):
        (model_dir / name).unlink()
    assert not missing_files(read_tokenizer_package(model_dir))


def test_role_tokens_written_as_objects_are_read(model_dir):
    edit(model_dir / "tokenizer_config.json", lambda d: d.update(eos_token={"content": "<|end_of_text|>"}))
    pkg = read_tokenizer_package(model_dir)
    assert not cross_file_mismatches(pkg, "tokenizer_config.json")


def test_an_eos_list_agrees_when_it_holds_the_eos_id(model_dir):
    edit(model_dir / "generation_config.json", lambda d: d.update(eos_token_id=[1, 3]))
    assert not cross_file_mismatches(read_tokenizer_package(model_dir), "generation_config.json")
    edit(model_dir / "generation_config.json", lambda d: d.update(eos_token_id=[2, 3]))
    [m] = cross_file_mismatches(read_tokenizer_package(model_dir), "generation_config.json")
    assert m.observed == "eos_token_id = 2 (<|pad|>), 3 (<|unk|>)" and m.key == "eos_token_id"


def test_role_ids_nested_in_text_config_are_read(model_dir):
    def nest(d):
        d["text_config"] = {"bos_token_id": d.pop("bos_token_id"), "eos_token_id": 2}
        d.pop("eos_token_id")

    edit(model_dir / "config.json", nest)
    [m] = cross_file_mismatches(read_tokenizer_package(model_dir), "config.json")
    assert m.key == "text_config.eos_token_id" and m.fix == "set text_config.eos_token_id to 1"


def test_a_tied_vote_goes_to_the_file_transformers_reads(model_dir):
    edit(model_dir / "config.json", lambda d: d.update(bos_token_id=3))
    edit(model_dir / "generation_config.json", lambda d: d.update(bos_token_id=3))
    pkg = read_tokenizer_package(model_dir)
    # tokenizer_config.json and special_tokens_map.json say 0, both configs say 3: tokenizer_config.json wins
    assert not cross_file_mismatches(pkg, "tokenizer_config.json")
    [m] = cross_file_mismatches(pkg, "config.json")
    assert m.expected == "ID 0 (<|begin_of_text|>) as in tokenizer_config.json, special_tokens_map.json"


def test_a_file_that_omits_an_added_token_is_named(model_dir):
    edit(model_dir / "tokenizer_config.json", lambda d: d["added_tokens_decoder"].pop("330"))
    [m] = cross_file_mismatches(read_tokenizer_package(model_dir), "tokenizer_config.json")
    assert m.what == "added token not listed" and m.key == "added_tokens_decoder"


def test_a_listed_special_token_must_be_special_in_tokenizer_json(model_dir):
    edit(model_dir / "tokenizer_config.json", lambda d: d["extra_special_tokens"].append("Ġlane"))
    [m] = cross_file_mismatches(read_tokenizer_package(model_dir), "tokenizer_config.json")
    assert m.what == "listed as special but tokenizer.json does not mark it special"
    assert m.key == "extra_special_tokens[229]"


def test_transformers_overrides_name_unknown_tokens_and_flags(model_dir):
    def change(d):
        d["extra_special_tokens"].append("<|new|>")
        d["added_tokens_decoder"]["321"]["rstrip"] = True

    edit(model_dir / "tokenizer_config.json", change)
    assert transformers_overrides(read_tokenizer_package(model_dir)) == [
        ("added_tokens_decoder.321.rstrip", "'<|image_start|>' rstrip=True but False in tokenizer.json"),
        ("extra_special_tokens[229]", "'<|new|>' is not in tokenizer.json (transformers adds it)"),
    ]


def test_renumbering_is_reported_per_token():
    pkg = read_tokenizer_package(DENSE / "model")
    written = {t.content: t.id for t in pkg.added}
    moved = renumbered(pkg, lambda t: written[t] + (t == "<|image|>"), "some runtime")
    assert [(m.observed, m.key) for m in moved] == [("'<|image|>' loads as 321", "added_tokens[4].id")]


def test_checksum_not_recorded_and_recorded(tmp_path):
    root = tmp_path / "release"
    shutil.copytree(DENSE / "model", root / "model", ignore=shutil.ignore_patterns("*.safetensors"))
    [m] = checksum_mismatches(root, {})
    assert m.what == "tokenizer checksum not recorded" and m.key == "tokenizer_checksum"
    manifest = json.loads((DENSE / "release.json").read_text())
    assert not checksum_mismatches(root, manifest)


def test_embedding_rows_of_a_tied_sharded_model(tmp_path):
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    cfg = json.loads((DENSE / "model/config.json").read_text())
    cfg.update(tie_word_embeddings=True, vocab_size=549)
    (model_dir / "config.json").write_text(json.dumps(cfg))
    save_file({"model.embed_tokens.weight": torch.zeros(500, 4)}, model_dir / "model-00001-of-00001.safetensors")
    index = {"weight_map": {"model.embed_tokens.weight": "model-00001-of-00001.safetensors"}}
    (model_dir / "model.safetensors.index.json").write_text(json.dumps(index))
    rows = embedding_rows(model_dir)
    assert [(r.key, r.rows) for r in rows] == [("vocab_size", 549), ("model.embed_tokens.weight", 500)]
    [m] = embedding_shortfalls(rows, 549, "largest token ID 548")
    assert m.path == model_dir / "model-00001-of-00001.safetensors" and m.observed == "500 rows"


def test_flags_default_as_tokenizers_fills_them():
    assert TokenFlags(special=True, normalized=False).changes(TokenFlags()) == [
        ("special", True, False),
        ("normalized", False, True),
    ]


def test_baseline_comparisons(model_dir, tmp_path):
    base = read_tokenizer_package(DENSE / "model")
    assert not moved_tokens(base, base) and not tokens_below_baseline(base, base)
    edit(model_dir / "tokenizer.json", lambda d: d["added_tokens"].pop())  # drop <|action_bin_31|>
    smaller = read_tokenizer_package(model_dir)
    [m] = moved_tokens(base, smaller)
    assert m.what == "baseline token removed" and m.observed == "'<|action_bin_31|>' is absent"
    assert not tokens_below_baseline(smaller, base)  # the full one adds it after the smaller's largest ID


def test_token_changes_table(model_dir):
    """The report's token-ID table: what was removed, moved, re-flagged, added, in ID order."""
    base = read_tokenizer_package(DENSE / "model")
    assert token_changes(base, base) == []

    def change(d):
        last = d["added_tokens"].pop()  # <|action_bin_31|> removed
        d["added_tokens"][-1]["lstrip"] = not d["added_tokens"][-1]["lstrip"]  # bin 30 re-flagged
        d["added_tokens"].append(dict(last, content="<|new|>"))  # a new token at the freed ID

    edit(model_dir / "tokenizer.json", change)
    rows = token_changes(base, read_tokenizer_package(model_dir))
    last = max(base.ids_of("<|action_bin_31|>"))
    flag = [r for r in rows if r["change"] == "flags"]
    assert [(r["token"], r["change"]) for r in rows if r["change"] != "flags"] == [
        ("<|action_bin_31|>", "removed"),
        ("<|new|>", "added"),
    ]
    assert rows[-2]["baseline_ids"] == rows[-1]["release_ids"] == [last] and rows[-2]["release_ids"] == []
    was = next(t.flags.lstrip for t in base.added if t.content == "<|action_bin_30|>")
    assert [(r["token"], r["flags"]) for r in flag] == [("<|action_bin_30|>", [f"lstrip: {was} -> {not was}".lower()])]


def test_a_version_change_allows_a_tokenizer_change(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        shutil.copytree(DENSE / "model", root / "model", ignore=shutil.ignore_patterns("*.safetensors"))
    assert not unversioned_change(a, b, "1.0.0", "1.0.0")
    (b / "model/tokenizer_config.json").write_text("{}")
    assert not unversioned_change(a, b, "1.0.0", "1.1.0")
    [m] = unversioned_change(a, b, "1.0.0", "1.0.0")
    assert "changed: model/tokenizer_config.json (edited)" in m.observed
