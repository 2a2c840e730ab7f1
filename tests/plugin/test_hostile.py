"""Hostile releases: every byte of a release is untrusted (docs/security.md).

Each case is a copy of golden/dense made hostile as an attacker would; the suite, run in a
subprocess with a time bound (and ``y`` on stdin, with ``-s``: nothing may read it), must give a
verdict, fail exactly the check that names the defect (its file and key), never run the code the
release ships (a marker file would appear), never read outside the release, never print a raw
traceback, and leave the release unchanged.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest

import mutations
from conftest import GOLDEN

TIME_BOUND_S = 120  # each hostile run (its area, or the whole suite) ends within this, with a verdict
RANK = "checkpoint/iter_0001000/mp_rank_00_000/model_optim_rng.pt"


def _marker_code(marker: Path) -> str:
    return f"from pathlib import Path\nPath({str(marker)!r}).write_text('code ran')\n"


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))


def _refresh(release: Path) -> None:
    """release.json rewritten, as an attacker who ships a consistent manifest would."""
    from vla_reference.release import write_manifest

    write_manifest(release)


def config_outside(release: Path, outside: Path) -> None:
    shipped = sorted((release / "configs").iterdir())[0]
    (outside / shipped.name).write_text(shipped.read_text())
    _edit_json(release / "release.json", lambda m: m.update(config=str(outside / shipped.name)))


def launch_script_outside(release: Path, outside: Path) -> None:
    (outside / "run.sh").write_text((release / "scripts/run_pretrain.sh").read_text())
    _edit_json(release / "release.json", lambda m: m.update(launch_script="../outside/run.sh"))


def model_remote_code(release: Path, outside: Path) -> None:
    (release / "model/evil.py").write_text(_marker_code(outside / "marker"))
    _edit_json(release / "model/config.json", lambda c: c.update(auto_map={"AutoModelForCausalLM": "evil.EvilModel"}))
    _refresh(release)


def tokenizer_remote_code(release: Path, outside: Path) -> None:
    (release / "model/evil_code.py").write_text(_marker_code(outside / "marker"))
    _edit_json(
        release / "model/tokenizer_config.json",
        lambda c: c.update(auto_map={"AutoTokenizer": ["evil_code.EvilTokenizer", None]}),
    )
    _refresh(release)


def huge_card(release: Path, outside: Path) -> None:
    card = release / "model/README.md"
    card.write_text(card.read_text() + ("lorem " * 10 + "\n") * 900_000)  # ~55 MB
    _refresh(release)


def yaml_alias_bomb(release: Path, outside: Path) -> None:
    card = release / "model/README.md"
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
    )
    text = card.read_text()
    card.write_text(text.replace("---\n", "---\n" + bomb, 1))
    _refresh(release)


def fifo_in_checkpoint(release: Path, outside: Path) -> None:
    os.mkfifo(release / "checkpoint/notes.fifo")


def weight_map_escapes(release: Path, outside: Path) -> None:
    model = release / "model"
    (outside / "model.safetensors").write_bytes((model / "model.safetensors").read_bytes())
    index = {"metadata": {}, "weight_map": {}}
    from safetensors import safe_open

    with safe_open(model / "model.safetensors", "pt") as f:
        index["weight_map"] = dict.fromkeys(f.keys(), "../../outside/model.safetensors")
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    _refresh(release)


def codebook_absolute(release: Path, outside: Path) -> None:
    from shutil import copy

    copy(release / "model/visual_codebook.safetensors", outside / "codebook.safetensors")
    _edit_json(
        release / "model/processor_config.json",
        lambda c: c["image_processor"].update(codebook_file=str(outside / "codebook.safetensors")),
    )
    _refresh(release)


def zip_bomb(release: Path, outside: Path) -> None:
    """A rank file rewritten deflated, with an extra entry of 200 MB of zeros deflated to ~200 KB."""
    path = release / RANK
    buf = io.BytesIO()
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(buf, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename), compress_type=zipfile.ZIP_DEFLATED)
        prefix = src.infolist()[0].filename.split("/")[0]
        dst.writestr(f"{prefix}/data/999", b"\0" * (200 << 20), compress_type=zipfile.ZIP_DEFLATED)
    path.write_bytes(buf.getvalue())
    _refresh(release)


def _safetensors_header(path: Path, change) -> None:
    """Rewrite a safetensors file's JSON header (the data block unchanged: offsets are relative to it)."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    change(header)
    new = json.dumps(header).encode()
    path.write_bytes(len(new).to_bytes(8, "little") + new + raw[8 + n :])


def nan_in_weight(release: Path, outside: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = release / "model/model.safetensors"
    with safe_open(path, "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    name = sorted(tensors)[0]
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, path, metadata=meta)
    _refresh(release)


def negative_shape(release: Path, outside: Path) -> None:
    def change(header):
        name = sorted(k for k in header if k != "__metadata__")[0]
        header[name]["shape"][0] = -header[name]["shape"][0]

    _safetensors_header(release / "model/model.safetensors", change)
    _refresh(release)


def _index(value):
    def make(release: Path, outside: Path) -> None:
        (release / "model/model.safetensors.index.json").write_text(json.dumps(value))
        _refresh(release)

    return make


def _text(rel: str, text: str):
    def make(release: Path, outside: Path) -> None:
        (release / rel).write_text(text)
        _refresh(release)

    return make


def arguments_truncated(release: Path, outside: Path) -> None:
    path = release / "checkpoint/iter_0001000/arguments.json"
    path.write_text(path.read_text()[: len(path.read_text()) // 2])
    _refresh(release)


def tokenizer_panics(release: Path, outside: Path) -> None:
    """A template naming a special token it does not define: tokenizers panics (a BaseException
    from Rust, not an Exception) on the first encode."""
    _edit_json(
        release / "model/tokenizer.json",
        lambda t: t.update(
            post_processor={
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "<nope>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"Sequence": {"id": "A", "type_id": 0}}],
                "special_tokens": {},
            }
        ),
    )
    _refresh(release)


def huge_number(release: Path, outside: Path) -> None:
    path = release / "model/config.json"
    text = path.read_text()
    path.write_text(text.replace('"hidden_size": 64', '"hidden_size": ' + "7" * 5000, 1))
    assert text != path.read_text()
    _refresh(release)


CASES = {
    # name: (make hostile, area, the checks that fail, what their message names)
    "config-outside": (
        config_outside,
        "reproducibility",
        ["test_release_config_matches_model_config"],  # the training-args check skips: one defect, one message
        "release.json names a config outside the release",
    ),
    "launch-script-outside": (
        launch_script_outside,
        "reproducibility",
        ["test_launch_script_runs"],
        "release.json names a launch script outside the release: '../outside/run.sh' [release.json:launch_script]",
    ),
    "model-auto-map": (
        model_remote_code,
        "manifest",
        ["test_no_code_in_the_release"],
        "the release needs remote code",
    ),
    "tokenizer-auto-map": (
        tokenizer_remote_code,
        "manifest or tokenizer",
        None,  # the code check, and the tokenizer checks transformers refuses without remote code
        "code in the model directory: evil_code.py",
    ),
    "card-55-MB": (huge_card, "card", None, "over the limit of 1048576 bytes"),
    "card-yaml-alias-bomb": (yaml_alias_bomb, "card", ["test_card_present"], "aliases (*name) are not accepted"),
    "fifo-in-checkpoint": (
        fifo_in_checkpoint,
        "manifest",
        ["test_no_path_leaves_the_release"],
        "not a regular file: a FIFO, device or socket",
    ),
    "weight-map-escapes": (weight_map_escapes, "checkpoint or tokenizer", None, "leaves the model directory"),
    "codebook-absolute": (
        codebook_absolute,
        "preprocessing",
        None,
        "codebook named outside the model directory",
    ),
    "rank-file-zip-bomb": (zip_bomb, "checkpoint", None, "torch.save writes every entry stored"),
    # malformed files the whole suite meets (area None: every area): each a finding naming the file
    "nan-in-weight": (nan_in_weight, None, None, "model/model.safetensors"),
    "negative-safetensors-shape": (negative_shape, None, None, "model/model.safetensors"),
    "weight-map-value-int": (
        _index({"metadata": {}, "weight_map": {"model.embed_tokens.weight": 5}}),
        None,
        None,
        "model/model.safetensors.index.json",
    ),
    "index-is-an-array": (_index([]), None, None, "model/model.safetensors.index.json"),
    "tracker-superscript": (
        _text("checkpoint/latest_checkpointed_iteration.txt", "\u00b2\n"),
        None,
        None,
        "checkpoint/latest_checkpointed_iteration.txt",
    ),
    "arguments-truncated": (arguments_truncated, None, None, "checkpoint/iter_0001000/arguments.json"),
    "arguments-an-array": (
        _text("checkpoint/iter_0001000/arguments.json", "[]\n"),
        None,
        None,
        "checkpoint/iter_0001000/arguments.json",
    ),
    "config-100k-deep": (_text("model/config.json", "[" * 100_000 + "]" * 100_000), None, None, "model/config.json"),
    "config-5000-digit-number": (huge_number, None, None, "model/config.json"),
    "tokenizer-panics": (tokenizer_panics, None, None, "model/tokenizer.json"),
    "eval-set-of-5000-sequences": (
        _text(
            "golden/eval_set.json",
            json.dumps({"sequences": [{"name": f"s{i}", "input_ids": [1, 2, 3]} for i in range(5000)]}),
        ),
        "parity",
        None,
        "5000 sequences, over the limit of 1024",
    ),
}


@pytest.fixture(scope="module")
def hostile_cache(tmp_path_factory):
    """One artefact cache for every hostile run (keyed by content: a hostile file never hits)."""
    return tmp_path_factory.mktemp("hostile-cache")


@pytest.mark.parametrize("name", CASES)
def test_a_hostile_release_is_judged_safely(name, tmp_path, hostile_cache):
    make, area, failing, named = CASES[name]
    release, outside = tmp_path / "release", tmp_path / "outside"
    shutil.copytree(GOLDEN / "dense", release)
    outside.mkdir()
    make(release, outside)
    before = mutations.snapshot(release)
    report = tmp_path / "report.json"
    status, out, took, peak = mutations.run_suite(
        release, hostile_cache, report, *(["-m", area] if area else []), timeout=TIME_BOUND_S
    )
    assert not (outside / "marker").exists(), "the release's code ran"
    # the oracle of the fuzz campaign: a verdict in time, no internal error, every failure naming
    # a file inside the release, the release unchanged
    verdict = mutations.judge(name, release, before, status, out, took, report, peak)
    assert not verdict.problems, "\n".join(verdict.problems)
    assert "DOES NOT CONFORM" in out, out[-3000:]
    data = json.loads(report.read_text())
    failed = {c["nodeid"].split("::", 1)[1]: c for c in data["checks"] if c["status"] == "failed"}
    if failing is not None:
        assert sorted(failed) == sorted(failing), sorted(failed)
    messages = " ".join(
        f"{f['what']}: {f['observed']} [{f['file']}:{f['key']}]" for c in failed.values() for f in c["findings"]
    )
    assert named in messages or named in out, messages[:3000]


def test_a_same_size_edit_with_its_mtime_restored_is_not_served_from_the_cache(tmp_path, run_suite):
    """The artefact cache is keyed by content: an in-place edit that keeps size and mtime still
    rebuilds the merge (ctime changes with any write), and the merge check sees the edit."""
    release, cache = tmp_path / "release", tmp_path / "cache"
    shutil.copytree(GOLDEN / "dense", release)
    first = run_suite(release, "-m", "checkpoint", "-k", "merge_equals", cache=cache)
    assert first.passed == ["test_merge_equals_shipped_model"], first.failed
    path = release / RANK
    st = path.stat()
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        entry = next(i for i in z.infolist() if "/data/" in i.filename and i.file_size >= 64)
        local = data[entry.header_offset : entry.header_offset + 30]  # the local header's lengths
        start = (
            entry.header_offset + 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
        )
    data[start + 8 : start + 12] = bytes(b ^ 0x40 for b in data[start + 8 : start + 12])
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    second = run_suite(release, "-m", "checkpoint", "-k", "merge_equals", cache=cache)
    assert list(second.failed) == ["test_merge_equals_shipped_model"], second.passed


def test_vla_rehash_trusts_no_digest_remembered_by_an_earlier_run(tmp_path, run_suite):
    """What an edit that also restored ctime (root, the clock set back) amounts to: the cache
    remembers the old digest under the file's current stat key. A plain run trusts it (the limit
    docs/security.md states); ``--vla-rehash`` reads the file again and the manifest sees the edit."""
    release, cache = tmp_path / "release", tmp_path / "cache"
    shutil.copytree(GOLDEN / "dense", release)
    assert not run_suite(release, "-m", "manifest", cache=cache).failed
    path = release / "model/generation_config.json"
    old = path.read_bytes()
    new = old.replace(b"1", b"2", 1)
    assert new != old and len(new) == len(old)
    path.write_bytes(new)
    memo = cache / "digests.jsonl"
    records = [json.loads(line) for line in memo.read_text().splitlines()]
    prefix = f"{path.resolve()}|"
    (was,) = {r["sha256"] for r in records if r["stat"].startswith(prefix)}
    st = path.stat()
    forged = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}"
    with memo.open("a") as log:
        log.write(json.dumps({"stat": forged, "sha256": was, "at": 0}) + "\n")
    trusting = run_suite(release, "-m", "manifest", cache=cache)
    assert not trusting.failed, trusting.failed
    rehashed = run_suite(release, "-m", "manifest", "--vla-rehash", cache=cache)
    assert list(rehashed.failed) == ["test_sizes_and_hashes_match"], sorted(rehashed.failed)
    assert "model/generation_config.json" in rehashed.failed["test_sizes_and_hashes_match"]
