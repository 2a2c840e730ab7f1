"""The fine-tune flow: golden/dense-ft against its base golden/dense, and bad fine-tunes.

golden/dense-ft is what a downstream team ships: a Hugging Face directory with changed weights,
the base's tokenizer and preprocessing, no training checkpoint, version 1.1.0. With
``--vla-baseline`` every check that needs the base runs on it. The bad fine-tunes are made the
way a team makes theirs: the fine-tuned directory edited, then ``pack`` (without ``--baseline``,
which would refuse them), then the suite against the base; each fails on the version, and the
printed fix, run as printed, makes the whole suite pass.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from vla_reference.card import restate_version
from vla_reference.release import pack

from conftest import GOLDEN
from releases import run_printed_fix

BASE = GOLDEN / "dense"
FINE_TUNE = GOLDEN / "dense-ft"
BASELINE_CHECKS = {
    "test_baseline_tokens_keep_ids_and_flags",
    "test_new_tokens_after_baseline",
    "test_tokenizer_change_bumps_version",
    "test_reproduces_baseline_snapshots",
    "test_version_greater_than_baseline",
    "test_version_bump_covers_changes",
}
AGAINST_BASE = (f"--vla-baseline={BASE}", "--vla-allow-partial")


def fine_tuned_dir(tmp_path: Path) -> Path:
    """The team's fine-tuned Hugging Face directory (golden/dense-ft's model/, as they hold it)."""
    hf = tmp_path / "fine-tuned"
    shutil.copytree(FINE_TUNE / "model", hf)
    return hf


def pack_fine_tune(hf: Path, out: Path, version: str) -> Path:
    card = hf / "README.md"
    card.write_text(restate_version(card.read_text(), version))
    pack(
        out,
        hf=hf,
        tokenizer=hf,
        processor=hf,
        card=card,
        configs=FINE_TUNE / "configs",
        docker=FINE_TUNE / "docker",
        scripts=FINE_TUNE / "scripts",
        examples=FINE_TUNE / "examples",
        name="VLA-Driver-Tiny-Dense",
        version=version,
        date="2026-11-20",
        fsync=False,
    )
    return out


def assert_fails_on_the_version_and_the_printed_fix_clears_it(run_suite, release, failing, fix, pattern):
    run = run_suite(release, *AGAINST_BASE)
    assert sorted(run.failed) == sorted(failing), sorted(run.failed)
    message = run.failed["test_version_bump_covers_changes"]
    assert pattern in message, message
    for name in failing:
        run.assert_reported(name)
    assert run_printed_fix(message, release) == fix
    again = run_suite(release, *AGAINST_BASE)
    assert not again.failed, sorted(again.failed)
    assert again.report["verdict"] == "CONFORMS", again.report["verdict_line"]


def test_the_golden_fine_tune_conforms_against_its_base_with_every_baseline_check_run(run_suite):
    run = run_suite(FINE_TUNE, *AGAINST_BASE)
    assert not run.failed, sorted(run.failed)
    assert BASELINE_CHECKS <= set(run.passed), sorted(BASELINE_CHECKS - set(run.passed))
    # what is skipped is what needs the training checkpoint a fine-tune does not ship, and the
    # demos' runs (opt-in), each said so
    assert run.skipped and all(
        "no Megatron checkpoint" in why or "--vla-run-examples" in why for why in run.skipped.values()
    ), run.skipped
    assert run.report["verdict_line"].startswith("VLA-Driver-Tiny-Dense v1.1.0: CONFORMS (partial: checkpoint")
    measured = run.check("test_reproduces_baseline_snapshots")["measured"]
    assert measured == {"compared_cases": 19, "changed_cases": 0}, measured


def test_a_token_added_without_a_major_bump(run_suite, tmp_path):
    """A new token grows the vocabulary (config.json vocab_size): an architecture change, major."""
    from vla_reference.tokenizer import build_tokenizer

    hf = fine_tuned_dir(tmp_path)
    build_tokenizer(hf, extra_tokens=("<|act:reverse|>",))
    tensors = load_file(hf / "model.safetensors")
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        tensors[name] = torch.cat([tensors[name], tensors[name][-1:].clone()])
    save_file(tensors, hf / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((hf / "config.json").read_text())
    config["vocab_size"] += 1
    (hf / "config.json").write_text(json.dumps(config, indent=2))
    release = pack_fine_tune(hf, tmp_path / "release", "1.1.0")
    assert_fails_on_the_version_and_the_printed_fix_clears_it(
        run_suite,
        release,
        ["test_version_bump_covers_changes"],
        "vla-release manifest . --version 2.0.0",
        "architecture changed",
    )


def test_image_normalisation_changed_under_a_patch_bump(run_suite, tmp_path):
    """CLIP's mean and std instead of ImageNet's (the chapter's gotcha) at 1.0.1: the outputs
    differ from the base's snapshots (VLA-PRE-003) and the processor files changed (VLA-VER-003).
    One defect seen by two rules; both print the same command, which clears both."""
    hf = fine_tuned_dir(tmp_path)
    for name in ("processor_config.json", "preprocessor_config.json"):
        cfg = json.loads((hf / name).read_text())
        section = cfg.get("image_processor", cfg)
        section.update(image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711])
        (hf / name).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    from transformers import AutoProcessor

    for name, data in AutoProcessor.from_pretrained(hf, trust_remote_code=False).processor_files().items():
        (hf / name).write_bytes(data)  # as save_pretrained writes them
    release = pack_fine_tune(hf, tmp_path / "release", "1.0.1")
    run = run_suite(release, *AGAINST_BASE)
    assert (
        "in the release: `vla-release manifest . --version 1.1.0`" in run.failed["test_reproduces_baseline_snapshots"]
    )
    assert_fails_on_the_version_and_the_printed_fix_clears_it(
        run_suite,
        release,
        ["test_reproduces_baseline_snapshots", "test_version_bump_covers_changes"],
        "vla-release manifest . --version 1.1.0",
        "preprocessing",
    )


def test_a_patch_bump_with_changed_weights(run_suite, tmp_path):
    release = pack_fine_tune(fine_tuned_dir(tmp_path), tmp_path / "release", "1.0.1")
    assert_fails_on_the_version_and_the_printed_fix_clears_it(
        run_suite,
        release,
        ["test_version_bump_covers_changes"],
        "vla-release manifest . --version 1.1.0",
        "weights changed, which requires a minor bump",
    )
