"""Every preprocessing check can fail: each break of a golden copy fails its check with a diff saying what changed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import GOLDEN
from releases import run_printed_fix

IMAGE_CASES = [
    "image_red",
    "image_green",
    "image_blue",
    "image_gradient",
    "image_edges",
    "image_odd_size",
    "image_tall",
    "image_wide",
    "image_rgba",
    "image_grayscale",
    "mixed",
]


def edit_config(release: Path, edit, *, valid: bool = True) -> None:
    """Edit processor_config.json as a release engineer would: the processor's other files regenerated
    from it (when it still loads) and the manifest refreshed, so only preprocessing checks can notice."""
    from transformers import AutoProcessor

    from vla_reference.release import write_manifest

    path = release / "model/processor_config.json"
    cfg = json.loads(path.read_text())
    edit(cfg)
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    if valid:
        for name, data in AutoProcessor.from_pretrained(release / "model").processor_files().items():
            (release / "model" / name).write_bytes(data)
    write_manifest(release)


def snapshot_failures(run) -> set[str]:
    return {re.sub(r"^test_matches_snapshot\[(.*)\]$", r"\1", n) for n in run.failed if n.startswith("test_matches")}


def expect_snapshot_diff(run, cases, pattern):
    assert snapshot_failures(run) == set(cases), sorted(run.failed)
    for case in cases:
        text = run.failed[f"test_matches_snapshot[{case}]"]
        assert re.search(pattern, text, re.S), text


CONFIG_BREAKS = {
    "mean-std-switched": (
        lambda c: c["image_processor"].update(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]),
        r"processor config image_processor.image_mean: \[0.5, 0.5, 0.5\], recorded \[0.485, 0.456, 0.406\]",
        IMAGE_CASES,
    ),
    "resize-interpolation-changed": (
        lambda c: c["image_processor"].update(resample=2),
        r"pixel_values: \d+ of \d+ values off by more than one 8-bit level"
        r".*processor config image_processor.resample: 2, recorded 3",
        # bilinear and bicubic agree on flat colours and smooth ramps (within a level): edges show it
        ["image_edges", "image_rgba", "image_tall", "image_wide"],
    ),
    "delimiter-token-changed": (
        lambda c: c["tokens"].update(image_start="<|video_start|>"),
        r"input_ids: 1 of \d+ values differ.*processor config tokens.image_start",
        IMAGE_CASES,
    ),
}


@pytest.mark.parametrize("name", CONFIG_BREAKS)
def test_image_config_change_fails_the_image_snapshots(name, golden_copy, run_suite):
    edit, pattern, cases = CONFIG_BREAKS[name]
    release = golden_copy("dense")
    edit_config(release, edit)
    run = run_suite(release, "-m", "preprocessing")
    expect_snapshot_diff(run, cases, pattern)
    for case in cases:
        run.assert_reported(f"test_matches_snapshot[{case}]")


def test_a_failing_image_snapshot_shows_expected_actual_and_difference_images(golden_copy, run_suite):
    """The report carries the images of a changed image preprocessing, as decodable PNGs of the
    shape the snapshot records, and the HTML shows all three."""
    import base64
    import io

    from PIL import Image

    release = golden_copy("dense")
    edit_config(release, CONFIG_BREAKS["mean-std-switched"][0])
    run = run_suite(release, "-m", "preprocessing", "-k", "image_edges")
    check = run.assert_reported("test_matches_snapshot[image_edges]")
    images = check["measured"]["snapshot_images"]["pixel_values"]
    decoded = {k: Image.open(io.BytesIO(base64.b64decode(v))) for k, v in images.items()}
    assert {k: (im.format, im.size, im.mode) for k, im in decoded.items()} == {
        k: ("PNG", (32, 32), "RGB") for k in ("expected", "actual", "difference")
    }
    assert decoded["expected"].tobytes() != decoded["actual"].tobytes()
    assert max(decoded["difference"].getextrema(), key=lambda e: e[1])[1] == 255  # scaled to its maximum
    for kind, data in images.items():
        assert f'alt="{kind}" src="data:image/png;base64,{data}"' in run.html


def test_antialias_off_is_refused_with_its_key(golden_copy, run_suite):
    release = golden_copy("dense")
    edit_config(release, lambda c: c["image_processor"].update(antialias=False), valid=False)
    run = run_suite(release, "-m", "preprocessing")
    assert list(run.failed) == ["test_processor_loads"], sorted(run.failed)
    assert "image_processor.antialias" in run.failed["test_processor_loads"]


def test_fps_dropped_is_refused_with_its_key(golden_copy, run_suite):
    release = golden_copy("dense")
    edit_config(release, lambda c: c["video_processor"].pop("sample_fps"), valid=False)
    run = run_suite(release, "-m", "preprocessing")
    assert list(run.failed) == ["test_processor_loads"], sorted(run.failed)
    assert "sample_fps" in run.failed["test_processor_loads"]


def test_codebook_edited(golden_copy, run_suite):
    release = golden_copy("dense")
    f = release / "model/visual_codebook.safetensors"
    data = bytearray(f.read_bytes())
    data[-5] ^= 0x40
    f.write_bytes(bytes(data))
    run = run_suite(release, "-m", "preprocessing")
    assert "test_codebooks_match_their_sha256" in run.failed and "test_processor_loads" not in run.failed
    assert re.search(
        r"codebook edited: .*\[model/visual_codebook.safetensors:image_processor.codebook_sha256\]",
        run.failed["test_codebooks_match_their_sha256"],
    )


def test_action_statistics_differ_between_configs(golden_copy, run_suite):
    release = golden_copy("dense")
    path = release / "model/config.json"
    cfg = json.loads(path.read_text())
    cfg["norm_stats"]["nuplan"]["q99"][0] = 0.5
    path.write_text(json.dumps(cfg, indent=2))
    run = run_suite(release, "-m", "preprocessing")
    assert list(run.failed) == ["test_action_stats_agree"], sorted(run.failed)
    assert "norm_stats.nuplan: config.json" in run.failed["test_action_stats_agree"]


def test_normalisation_outside_any_convention(golden_copy, run_suite):
    release = golden_copy("dense")
    edit_config(release, lambda c: c["image_processor"].update(image_mean=[0.48, 0.45, 0.40]))
    run = run_suite(release, "-m", "preprocessing", "-k", "not snapshot")
    assert list(run.failed) == ["test_normalization_is_a_named_convention[image_processor]"], sorted(run.failed)


def test_config_edited_without_a_version_bump_is_not_re_recorded(golden_copy, run_suite):
    release = golden_copy("dense")
    edit_config(release, lambda c: c["image_processor"].update(resample=2))
    run = run_suite(release, "-m", "preprocessing", "-k", "image_edges", "--snapshot-update")
    assert list(run.failed) == ["test_matches_snapshot[image_edges]"], sorted(run.failed)
    assert "refusing to re-record" in run.failed["test_matches_snapshot[image_edges]"]
    assert (
        "in the release: `vla-release snapshots . --version 1.1.0`" in run.failed["test_matches_snapshot[image_edges]"]
    )


def test_version_bump_allows_re_recording(golden_copy, run_suite):
    release = golden_copy("dense")
    edit_config(release, lambda c: c["image_processor"].update(resample=2))
    manifest = json.loads((release / "release.json").read_text())
    manifest["version"] = "1.1.0"
    (release / "release.json").write_text(json.dumps(manifest))
    run = run_suite(release, "-m", "preprocessing", "-k", "image_edges", "--snapshot-update")
    assert not run.failed, run.failed
    run = run_suite(release, "-m", "preprocessing", "-k", "image_edges")
    assert not run.failed and "test_matches_snapshot[image_edges]" in run.passed


def test_fine_tune_must_reproduce_the_base_snapshots(golden_copy, run_suite):
    base = golden_copy("dense")
    tuned = golden_copy("moe")  # same processor config, but its own seed: different codebooks
    run = run_suite(tuned, "-m", "preprocessing", f"--vla-baseline={base}", "-k", "baseline")
    assert list(run.failed) == ["test_reproduces_baseline_snapshots"], sorted(run.failed)
    run = run_suite(base, "-m", "preprocessing", f"--vla-baseline={base}", "-k", "baseline")
    assert run.passed == ["test_reproduces_baseline_snapshots"]


def test_patch_size_change_is_caught(golden_copy, run_suite):
    """16-pixel patches do not fit the shipped 8x8 codebook: the config is refused, naming the key."""
    release = golden_copy("dense")
    edit_config(release, lambda c: c["image_processor"].update(patch_size=16), valid=False)
    run = run_suite(release, "-m", "preprocessing")
    assert list(run.failed) == ["test_processor_loads"], sorted(run.failed)
    assert (
        "the config expects (64, 768) [model/visual_codebook.safetensors:codebook]"
        in run.failed["test_processor_loads"]
    )


PROCESSOR_BUGS = {
    # a processor fork that hands the model BGR instead of RGB
    "channel-order-bgr": (
        "vla_reference.processor.processor",
        "preprocess_image",
        "lambda original: lambda image, cfg: original(image, cfg)[::-1].copy()",
        set(IMAGE_CASES),  # per-channel mean/std: even grey changes
        r"pixel_values: \d+ of \d+ values off by more than one 8-bit level",
    ),
    # ... and one that reverses a video's frames
    "video-frame-order-reversed": (
        "vla_reference.processor.video",
        "video_frames",
        "lambda original: lambda frames: list(original(frames))[::-1]",
        {"video"},
        r"pixel_values_videos: \d+ of \d+ values off by more than one 8-bit level",
    ),
}


@pytest.mark.parametrize("name", PROCESSOR_BUGS)
def test_processor_behaviour_change_fails_the_snapshots(name, golden_copy, run_suite, pytester):
    module, attr, wrapper, cases, pattern = PROCESSOR_BUGS[name]
    pytester.makeconftest(
        f"""
        import importlib
        import pytest

        patch = pytest.MonkeyPatch()

        def pytest_sessionstart(session):
            mod = importlib.import_module({module!r})
            patch.setattr(mod, {attr!r}, ({wrapper})(getattr(mod, {attr!r})))

        def pytest_sessionfinish(session):
            patch.undo()
        """
    )
    release = golden_copy("dense")
    run = run_suite(release, "-m", "preprocessing", "-k", "snapshot")
    expect_snapshot_diff(run, cases, pattern)
    for case in cases:
        assert (
            "processor config: unchanged since the snapshot was recorded"
            in run.failed[f"test_matches_snapshot[{case}]"]
        )


def _drop_first_id(data: bytes) -> bytes:
    first = re.search(rb"input_ids: int64 \[[^\]]*\] exact\n  \([^)]*\) (\S+ )", data)
    assert first is not None
    return data[: first.start(1)] + data[first.end(1) :]


SNAPSHOT_DAMAGE = {
    # cut mid-line (a copy that stopped early): the JSON header or an entry no longer parses
    "truncated": (lambda b: b[: len(b) // 3], r"unreadable snapshot: "),
    "not-utf8": (lambda b: b[:200] + b"\xa2" + b[201:], r"unreadable snapshot: 'utf-8' codec can't decode"),
    # one value dropped from an exact entry: the count no longer fits the recorded shape
    "value-dropped": (_drop_first_id, r"unreadable snapshot: input_ids: \d+ values recorded for shape \["),
}


@pytest.mark.parametrize("name", SNAPSHOT_DAMAGE)
def test_damaged_snapshot_file_fails_its_case_naming_the_file(name, golden_copy, run_suite):
    damage, pattern = SNAPSHOT_DAMAGE[name]
    release = golden_copy("dense")
    rel = "golden/preprocessing/test_preprocessing/test_matches_snapshot[ipa].vla.txt"
    f = release / rel
    f.write_bytes(damage(f.read_bytes()))
    run = run_suite(release, "-m", "preprocessing")
    assert list(run.failed) == ["test_matches_snapshot[ipa]"], sorted(run.failed)
    text = run.failed["test_matches_snapshot[ipa]"]
    assert re.search(pattern, text), text
    assert f"[{rel}]" in text and "restore the file shipped with the release" in text
    assert "Traceback" not in text and "\nE " not in text  # the check's message, not a raw error


def test_missing_snapshot_fails_its_case_with_the_fix(golden_copy, run_suite):
    release = golden_copy("dense")
    rel = "golden/preprocessing/test_preprocessing/test_matches_snapshot[video].vla.txt"
    (release / rel).unlink()
    run = run_suite(release, "-m", "preprocessing")
    assert list(run.failed) == ["test_matches_snapshot[video]"], sorted(run.failed)
    text = run.failed["test_matches_snapshot[video]"]
    assert f"no snapshot recorded for video: absent [{rel}]" in text, text
    run.assert_reported("test_matches_snapshot[video]")
    assert run_printed_fix(text, release) == "vla-release snapshots ."
    again = run_suite(release, "-m", "preprocessing or manifest")
    assert not again.failed and "test_matches_snapshot[video]" in again.passed, again.failed


def test_unparsable_processor_config_fails_only_the_load_check(golden_copy, run_suite):
    """One defect, one failure: the checks that read the config or use the processor skip."""
    from vla_reference.release import write_manifest

    release = golden_copy("dense")
    path = release / "model/processor_config.json"
    path.write_bytes(path.read_bytes()[:500])
    write_manifest(release)  # as a release engineer would have: only the preprocessing checks can notice
    run = run_suite(release, "-m", "preprocessing")
    assert list(run.failed) == ["test_processor_loads"], sorted(run.failed)
    text = run.failed["test_processor_loads"]
    assert re.search(r"processor config unreadable: not valid JSON: .*\[model/processor_config\.json\]", text), text
    assert "test_matches_snapshot[image_red]" in run.skipped


def test_a_minor_bump_lets_a_fine_tune_change_its_preprocessing_and_the_printed_fix_gives_it(golden_copy, run_suite):
    """docs/metadata.md: a preprocessing change needs at least a minor bump. VLA-PRE-003's fix,
    run as printed in the release, gives that bump; then the check passes and counts the cases
    that changed."""
    base = golden_copy("dense")
    tuned = golden_copy("moe")  # other codebooks: its preprocessing differs from dense's
    run = run_suite(tuned, "-m", "preprocessing", f"--vla-baseline={base}", "-k", "baseline")
    message = run.failed["test_reproduces_baseline_snapshots"]
    assert run_printed_fix(message, tuned) == "vla-release manifest . --version 1.1.0", message
    again = run_suite(tuned, "-m", "preprocessing", f"--vla-baseline={base}", "-k", "baseline")
    assert not again.failed and again.passed == ["test_reproduces_baseline_snapshots"], (again.failed, again.skipped)
    measured = again.check("test_reproduces_baseline_snapshots")["measured"]
    assert measured["changed_cases"] > 0 and measured["changed_cases"] <= measured["compared_cases"], measured
    assert measured["changed_cases_covered_by"] == "version 1.1.0 over 1.0.0", measured


def test_the_printed_snapshot_fix_re_records_under_the_next_minor_version(golden_copy, run_suite):
    """VLA-PRE-002's fix, run as printed: the snapshots re-recorded under 1.1.0, the version in
    release.json and the card, release.json refreshed; the metadata areas pass with it."""
    release = golden_copy("dense")
    edit_config(release, lambda c: c["image_processor"].update(resample=2))
    run = run_suite(release, "-m", "preprocessing")
    text = run.failed["test_matches_snapshot[image_edges]"]
    assert run_printed_fix(text, release) == "vla-release snapshots . --version 1.1.0"
    again = run_suite(release, "-m", "preprocessing or card or manifest or versioning")
    assert not again.failed, sorted(again.failed)
    assert json.loads((release / "release.json").read_text())["version"] == "1.1.0"


def test_a_hand_edited_processor_config_fails_the_round_trip_and_the_printed_fix_re_saves_it(golden_copy, run_suite):
    """VLA-PRE-004: a config that means the same but is not what save_pretrained writes (here:
    re-indented by hand) fails the round trip, naming the file; the printed fix re-saves it."""
    from vla_reference.release import write_manifest

    release = golden_copy("dense")
    path = release / "model/processor_config.json"
    path.write_text(json.dumps(json.loads(path.read_text()), indent=4))
    write_manifest(release)
    run = run_suite(release, "-m", "preprocessing")
    assert list(run.failed) == ["test_config_round_trips"], sorted(run.failed)
    text = run.failed["test_config_round_trips"]
    assert "re-saved file differs" in text and "[model/processor_config.json]" in text, text
    run.assert_reported("test_config_round_trips")
    assert run_printed_fix(text, release) == "vla-release snapshots . --resave-processor"
    again = run_suite(release, "-m", "preprocessing or manifest")
    assert not again.failed, sorted(again.failed)
    assert path.read_bytes() == (GOLDEN / "dense/model/processor_config.json").read_bytes()


def test_a_snapshot_update_run_ends_green_and_refreshes_only_the_snapshot_entries(golden_copy, run_suite):
    """The flow the README gives: bump the version, --snapshot-update, and the release conforms.
    The update run skips the checks of release.json against the files (it refreshes the
    snapshots' entries when it ends), and refreshes nothing else: a file changed elsewhere stays
    a finding of the next run."""
    release = golden_copy("dense")
    edit_config(release, lambda c: c["image_processor"].update(resample=2))
    run_printed_fix("in the release: `vla-release manifest . --version 1.1.0`", release)
    script = release / "scripts/run_pretrain.sh"
    script.write_text(script.read_text() + "# edited, not refreshed\n")
    update = run_suite(release, "--snapshot-update")
    assert not update.failed, sorted(update.failed)
    assert "--snapshot-update: release.json is refreshed" in update.skipped["test_sizes_and_hashes_match"]
    after = run_suite(release)
    assert list(after.failed) == ["test_sizes_and_hashes_match"], sorted(after.failed)
    assert "[scripts/run_pretrain.sh]" in after.failed["test_sizes_and_hashes_match"]
    assert "golden/preprocessing" not in after.failed["test_sizes_and_hashes_match"]
