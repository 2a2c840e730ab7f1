"""``vla-release pack``: the inputs a lab (or a downstream team) holds become a release.

The golden releases are pack's own output (the golden builder makes their inputs and packs them),
so packing golden/dense's parts again must give golden/dense, every byte that is not a computed
float. A fine-tune packed from a Hugging Face directory gets a release the suite judges.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vla_reference.cli import main as cli_main
from vla_reference.cli._main import build_parser
from vla_reference.release import PackError, pack, read_manifest
from vla_reference.release import _pack as pack_module

from conftest import GOLDEN
from releases import assert_same_logits, assert_same_release

DENSE = GOLDEN / "dense"
NAME, DATE = "VLA-Driver-Tiny-Dense", "2026-11-01"


def parts(release: Path = DENSE) -> dict[str, Path]:
    """A release's parts as pack's inputs (``model/`` holds the tokenizer and the processor)."""
    return {
        "tokenizer": release / "model",
        "processor": release / "model",
        "card": release / "model/README.md",
        "configs": release / "configs",
        "docker": release / "docker",
        "scripts": release / "scripts",
        "examples": release / "examples",
    }


@pytest.fixture
def fine_tune(tmp_path) -> Path:
    """A downstream team's fine-tune of golden/dense: its model directory with one weight changed."""
    hf = tmp_path / "fine-tune"
    shutil.copytree(DENSE / "model", hf)
    weights = load_file(hf / "model.safetensors")
    key = "model.layers.0.mlp.down_proj.weight"
    weights[key] = weights[key] + 0.01
    save_file(weights, hf / "model.safetensors", metadata={"format": "pt"})
    return hf


def test_packing_the_golden_parts_gives_the_golden_release(tmp_path):
    """The checkpoint merged (to the shipped bytes), tokenizer, processor, card, configs, docker,
    scripts and demos copied, eval set made from the golden texts, logits from the sharded forward,
    snapshots recorded, release.json written: golden/dense, which the builder made the same way."""
    out = tmp_path / "release"
    manifest = pack(out, checkpoint=DENSE / "checkpoint", **parts(), name=NAME, version="1.0.0", date=DATE, fsync=False)
    assert_same_release("dense", DENSE, out)
    assert manifest == read_manifest(out)
    with safe_open(out / "golden/expected_logits.safetensors", "pt") as f:
        assert f.metadata()["source"] == "sharded forward over the training checkpoint, float32"


def test_a_torch_dist_checkpoint_packs_whole_and_gives_the_same_model(tmp_path):
    """megatron-core's default format: every file shipped (``.metadata`` is a dotfile), the
    same merged model, logits from the sharded forward at its recorded layout."""
    from vla_reference.megatron import MegatronSource, write_torch_dist

    src = MegatronSource.open(DENSE / "checkpoint")
    write_torch_dist(src, tmp_path / "ckpt", src.layout, iteration=src.iteration)
    src.close()
    out = tmp_path / "release"
    pack(out, checkpoint=tmp_path / "ckpt", **parts(), name=NAME, version="1.0.0", date=DATE, fsync=False)
    shipped = sorted(p.relative_to(tmp_path / "ckpt") for p in (tmp_path / "ckpt").rglob("*") if p.is_file())
    assert shipped == sorted(p.relative_to(out / "checkpoint") for p in (out / "checkpoint").rglob("*") if p.is_file())
    assert any(p.name == ".metadata" for p in shipped)
    assert (out / "model/model.safetensors").read_bytes() == (DENSE / "model/model.safetensors").read_bytes()
    assert_same_logits("torch_dist", DENSE, out)


def test_a_fine_tune_packs_from_its_hugging_face_directory_and_twice_gives_the_same_bytes(tmp_path, fine_tune):
    one, two = tmp_path / "one", tmp_path / "two"
    for out in (one, two):
        pack(out, hf=fine_tune, **parts(), name=NAME, version="1.1.0", date=DATE, fsync=False)
    assert_same_release("fine-tune", one, two)
    assert not (one / "checkpoint").exists()  # none was given: the suite says so, and skips those checks
    assert (one / "model/model.safetensors").read_bytes() == (fine_tune / "model.safetensors").read_bytes()
    assert json.loads((one / "model/config.json").read_text()) == json.loads((fine_tune / "config.json").read_text())


def test_a_pack_that_fails_half_way_leaves_nothing(tmp_path, fine_tune, monkeypatch):
    def crash(*args):
        raise RuntimeError("killed while recording snapshots")

    monkeypatch.setattr(pack_module, "_record_snapshots", crash)
    with pytest.raises(RuntimeError, match="killed"):
        pack(tmp_path / "out", hf=fine_tune, **parts(), name=NAME, version="1.1.0", date=DATE, fsync=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fine-tune"]  # no release, no staging directory


def test_a_baseline_refuses_a_version_that_understates_the_change_and_its_fix_works(tmp_path, fine_tune):
    with pytest.raises(PackError) as e:
        pack(tmp_path / "out", hf=fine_tune, **parts(), name=NAME, version="1.0.1", date=DATE, baseline=DENSE)
    message = str(e.value)
    assert "understates" in message and "minor" in message and "model.layers.0.mlp.down_proj.weight" in message
    assert e.value.fix == "pass --version 1.1.0 (or higher)"
    assert not (tmp_path / "out").exists()
    fixed = e.value.fix.split()[2]
    pack(tmp_path / "out", hf=fine_tune, **parts(), name=NAME, version=fixed, date=DATE, baseline=DENSE, fsync=False)
    assert read_manifest(tmp_path / "out")["version"] == "1.1.0"


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda kw, tmp: kw.update(checkpoint=DENSE / "checkpoint"), "exactly one"),
        (lambda kw, tmp: kw.pop("hf"), "exactly one"),
        (lambda kw, tmp: kw.update(version="1.1"), "1.1"),
        (lambda kw, tmp: kw.update(date="1 Nov 2026"), "YYYY-MM-DD"),
        (lambda kw, tmp: kw.update(tokenizer=tmp), "no tokenizer.json"),
        (lambda kw, tmp: kw.update(card=tmp / "README.md"), "no model card"),
        (lambda kw, tmp: kw.update(processor=tmp), "no processor_config.json"),
    ],
    ids=["two-sources", "no-source", "not-semver", "bad-date", "no-tokenizer", "no-card", "no-processor"],
)
def test_inputs_that_cannot_make_a_release_are_refused_naming_them(tmp_path, fine_tune, change, says):
    kw = {"hf": fine_tune, **parts(), "name": NAME, "version": "1.1.0", "date": DATE}
    empty = tmp_path / "empty"
    empty.mkdir()
    change(kw, empty)
    with pytest.raises(PackError, match=says):
        pack(tmp_path / "out", **kw)
    assert not (tmp_path / "out").exists()


def test_a_codebook_named_outside_the_processor_directory_is_refused(tmp_path, fine_tune):
    proc = tmp_path / "processor"
    shutil.copytree(DENSE / "model", proc)
    config = json.loads((proc / "processor_config.json").read_text())
    config["feature_extractor"]["audio_codebook_file"] = "../../etc/passwd"
    (proc / "processor_config.json").write_text(json.dumps(config))
    with pytest.raises(PackError, match="plain file name") as e:
        pack(tmp_path / "out", hf=fine_tune, **{**parts(), "processor": proc}, name=NAME, version="1.1.0", date=DATE)
    assert e.value.key == "feature_extractor.audio_codebook_file"


def test_the_command_line_is_the_documented_contract(tmp_path):
    flags = (
        "OUT --checkpoint CKPT --tokenizer DIR --processor PATH --card README.md --name NAME --version 1.2.3 "
        "--date 2026-12-01 --configs C --docker D --scripts S --examples E --eval-set F --baseline B"
    ).split()
    args = build_parser().parse_args(["pack", *flags])
    assert (args.out, args.checkpoint, args.hf, args.version, args.eval_set, args.baseline) == (
        Path("OUT"),
        Path("CKPT"),
        None,
        "1.2.3",
        Path("F"),
        Path("B"),
    )
    assert cli_main(["pack", "OUT", "--checkpoint", "C", "--hf", "H", "--tokenizer", "T", "--card", "R"]) == 2


def test_pack_runs_the_suite_on_what_it_wrote_and_exits_with_the_verdict(tmp_path, fine_tune):
    card = tmp_path / "README.md"
    card.write_text((DENSE / "model/README.md").read_text().replace("1.0.0", "1.1.0"))
    given = {**parts(), "card": card}
    cmd = [sys.executable, "-m", "vla_reference.cli", "-q", "pack", str(tmp_path / "out"), "--hf", str(fine_tune)]
    for k, v in given.items():
        cmd += [f"--{k}", str(v)]
    cmd += ["--name", NAME, "--version", "1.1.0", "--date", DATE, "--baseline", str(DENSE), "--no-fsync"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "v1.1.0: CONFORMS" in done.stdout
    assert "not checked: no Megatron checkpoint" in done.stdout
