"""The examples area can fail: a demo that crashes, one that normalises images itself, one that
reads outside the release, one that names an outside path, missing demos; and without
--vla-run-examples no demo code runs (a marker file proves it)."""

from __future__ import annotations

import re
from pathlib import Path

from vla_reference.release import write_manifest

from conftest import GOLDEN
from releases import write_png_bomb

RUN = ("-m", "examples", "--vla-run-examples")


def edit_demo(release: Path, name: str, old: str, new: str) -> Path:
    path = release / "examples" / name
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))
    write_manifest(release)  # as the team would: only the examples area can notice
    return path


def test_the_golden_demos_pass_statically_and_when_run(run_suite):
    run = run_suite(GOLDEN / "dense", *RUN)
    assert not run.failed and not run.skipped, (run.failed, run.skipped)
    assert sorted(n for n in run.passed if n.startswith("test_example_runs")) == [
        "test_example_runs[cli_demo.py]",
        "test_example_runs[inference_example.py]",
        "test_example_runs[interactive_demo.py]",
    ]


def test_a_demo_that_crashes(golden_copy, run_suite):
    release = golden_copy("dense")
    edit_demo(
        release,
        "cli_demo.py",
        "    folder = model_dir(model_path)\n",
        "    folder = model_dir(model_path)\n    raise RuntimeError('demo broke')\n",
    )
    run = run_suite(release, *RUN, "-k", "cli_demo or not runs")
    assert list(run.failed) == ["test_example_runs[cli_demo.py]"], sorted(run.failed)
    text = run.failed["test_example_runs[cli_demo.py]"]
    assert re.search(
        r"demo failed: exit status 1: RuntimeError: demo broke, expected exit status 0 \[examples/cli_demo.py\]", text
    ), text
    run.assert_reported("test_example_runs[cli_demo.py]")


def test_a_demo_that_normalises_images_itself(golden_copy, run_suite):
    release = golden_copy("dense")
    edit_demo(
        release,
        "inference_example.py",
        "def inputs(norm_key: str)",
        "def pixels(im):\n"
        "    return (np.asarray(im) / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]\n\n\n"
        "def inputs(norm_key: str)",
    )
    run = run_suite(release, "-m", "examples")
    assert list(run.failed) == ["test_examples_use_the_release_processor"], sorted(run.failed)
    text = run.failed["test_examples_use_the_release_processor"]
    assert (
        "demo preprocesses by hand: pixels rescaled by 255 (line " in text and "[examples/inference_example.py]" in text
    ), text
    assert "normalisation constants [0.485, 0.456, 0.406]" in text, text
    run.assert_reported("test_examples_use_the_release_processor")


def test_a_demo_that_reads_a_file_outside_the_release(golden_copy, run_suite, tmp_path):
    release = golden_copy("dense")
    secret = release.parent / "outside.txt"
    secret.write_text("not the release's")
    edit_demo(
        release,
        "cli_demo.py",
        "    folder = model_dir(model_path)\n",
        "    folder = model_dir(model_path)\n"
        "    print((Path(__file__).resolve().parents[2] / 'outside.txt').read_text())\n",
    )
    run = run_suite(release, *RUN, "-k", "cli_demo or not runs")
    assert list(run.failed) == ["test_example_runs[cli_demo.py]"], sorted(run.failed)
    text = run.failed["test_example_runs[cli_demo.py]"]
    assert f"demo read outside the release: {secret.resolve()}" in text, text


def test_a_demo_that_decodes_a_decompression_bomb_fails_on_its_memory_bound(golden_copy, run_suite):
    """A 3.5 MB PNG shipped with the demo that decodes to 3.6 GB, opened with Pillow's guard
    turned off: the demo ends in MemoryError at its bound (2 GiB + 4x the weights here), not in
    the host's swap; undoing the edit, as the fix says, passes."""
    release = golden_copy("dense")
    (release / "examples/assets").mkdir()
    assert write_png_bomb(release / "examples/assets/scene.png", 60_000) == 3_600_000_000
    old, new = (
        "    folder = model_dir(model_path)\n",
        "    folder = model_dir(model_path)\n"
        "    Image.MAX_IMAGE_PIXELS = None\n"
        "    Image.open(Path(__file__).parent / 'assets' / 'scene.png').load()\n",
    )
    path = edit_demo(release, "cli_demo.py", old, new)
    run = run_suite(release, *RUN, "-k", "cli_demo or not runs")
    assert list(run.failed) == ["test_example_runs[cli_demo.py]"], sorted(run.failed)
    text = run.failed["test_example_runs[cli_demo.py]"]
    assert re.search(
        r"demo ran out of its memory bound: MemoryError after \d+ s, expected at most 20\d\d MiB of private memory "
        r"\(--vla-examples-memory\) \[examples/cli_demo.py\]",
        text,
    ), text
    assert "Fix: make `python examples/cli_demo.py" in text and "MAX_IMAGE_PIXELS" in text, text
    run.assert_reported("test_example_runs[cli_demo.py]")
    path.write_text(path.read_text().replace(new, old, 1))
    write_manifest(release)
    assert not run_suite(release, *RUN, "-k", "cli_demo or not runs").failed


def test_a_demo_that_names_an_outside_path(golden_copy, run_suite):
    release = golden_copy("dense")
    edit_demo(
        release,
        "cli_demo.py",
        'p.add_argument("--max_new_tokens", type=int, default=8)',
        'p.add_argument("--max_new_tokens", type=int, default=8)\n'
        '    p.add_argument("--cache", default="/home/alice/vla/cache")',
    )
    run = run_suite(release, "-m", "examples")
    assert list(run.failed) == ["test_examples_name_no_path_outside_the_release"], sorted(run.failed)
    assert "'/home/alice/vla/cache'" in run.failed["test_examples_name_no_path_outside_the_release"]


def test_a_demo_importing_what_the_environment_lacks_and_one_that_does_not_parse(golden_copy, run_suite):
    release = golden_copy("dense")
    edit_demo(release, "interactive_demo.py", "import torch\n", "import torch\nimport gradio_not_installed_here\n")
    (release / "examples/broken.py").write_text("def f(:\n")
    write_manifest(release)
    run = run_suite(release, "-m", "examples")
    assert sorted(run.failed) == ["test_examples_import_only_what_the_environment_provides", "test_examples_parse"]
    assert (
        "import gradio_not_installed_here (line "
        in run.failed["test_examples_import_only_what_the_environment_provides"]
    )
    assert "[examples/broken.py]" in run.failed["test_examples_parse"]


def test_missing_demos(golden_copy, run_suite):
    release = golden_copy("dense")
    (release / "examples/cli_demo.py").unlink()
    write_manifest(release)
    run = run_suite(release, "-m", "examples")
    assert list(run.failed) == ["test_examples_present"], sorted(run.failed)
    assert "demo missing: absent [examples/cli_demo.py]" in run.failed["test_examples_present"]


def test_without_the_flag_no_demo_code_runs(golden_copy, run_suite, tmp_path):
    marker = tmp_path / "ran"
    release = golden_copy("dense")
    for name in ("cli_demo.py", "inference_example.py", "interactive_demo.py"):
        path = release / "examples" / name
        path.write_text(f"open({str(marker)!r}, 'w').close()\n" + path.read_text())
    write_manifest(release)
    run = run_suite(release)
    assert not marker.exists()
    assert all(
        "--vla-run-examples" in run.skipped[f"test_example_runs[{n}]"] for n in ("cli_demo.py", "interactive_demo.py")
    )
