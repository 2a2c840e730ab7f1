"""The plugin: options, collection from anywhere, user fixtures, markers, summary, caching."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import pytest

from pytest_vla.session import PARTIAL_EXIT

from conftest import GOLDEN, REPO

DENSE = GOLDEN / "dense"


# the checkpoint area on golden/dense: layout, replicas, merge, three round trips, config vs args,
# arguments.json vs the rank files
CHECKPOINT_PASSED = 8


def test_bad_release_path_is_a_usage_error(pytester):
    result = pytester.runpytest("--vla-release=/no/such/dir")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--vla-release: /no/such/dir is not a directory*"])


def test_bad_tolerance_is_a_usage_error(pytester):
    result = pytester.runpytest(f"--vla-release={DENSE}", "--vla-logit-atol=lots")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--vla-logit-atol: 'lots' is not a number*"])


def test_cache_inside_release_is_refused(pytester, golden_copy):
    release = golden_copy("dense")
    result = pytester.runpytest(f"--vla-release={release}", f"--vla-cache-dir={release / 'cache'}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*is inside the release; the release is never written*"])


def test_suite_runs_from_any_directory_with_verdict(pytester, vla_cache):
    result = pytester.runpytest(f"--vla-release={DENSE}", f"--vla-cache-dir={vla_cache}")
    assert "failed" not in result.parseoutcomes()
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "*pytest-vla conformance*",
            f"checkpoint * {CHECKPOINT_PASSED} * 0 * 0",
            "VLA-Driver-Tiny-Dense v1.0.0: CONFORMS",
        ]
    )


def test_a_deselected_area_makes_the_verdict_partial_and_the_exit_status_non_zero(pytester, vla_cache):
    """A gate never says CONFORMS about areas it did not look at: -m checkpoint conforms partially,
    names what was not checked, and exits 6 unless --vla-allow-partial."""
    args = (f"--vla-release={DENSE}", f"--vla-cache-dir={vla_cache}", "-m", "checkpoint")
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=CHECKPOINT_PASSED)
    assert result.ret == PARTIAL_EXIT
    result.stdout.fnmatch_lines(
        [
            "parity * 0 * 0 * 0  not checked: deselected",
            "VLA-Driver-Tiny-Dense v1.0.0: CONFORMS (partial: parity, tokenizer, preprocessing, card, versioning, "
            "manifest, reproducibility, examples not checked: deselected)",
        ]
    )
    assert pytester.runpytest(*args, "--vla-allow-partial").ret == pytest.ExitCode.OK


def test_verdict_counts_failures(pytester, golden_copy, vla_cache):
    release = golden_copy("dense")
    shutil.rmtree(release / "checkpoint/iter_0001000/mp_rank_00_001")
    result = pytester.runpytest(f"--vla-release={release}", f"--vla-cache-dir={vla_cache}", "-m", "checkpoint")
    result.stdout.fnmatch_lines(
        [
            "VLA-CKPT-001: test_checkpoint_layout. Fix: *",
            "VLA-Driver-Tiny-Dense v1.0.0: DOES NOT CONFORM (1 failure: VLA-CKPT-001)",
        ]
    )


def test_ini_key_selects_the_release(pytester, vla_cache):
    pytester.makeini(f"[pytest]\nvla_release = {DENSE}\n")
    result = pytester.runpytest(f"--vla-cache-dir={vla_cache}", "-m", "checkpoint")
    result.assert_outcomes(passed=CHECKPOINT_PASSED)


def test_markers_select_one_area(pytester, vla_cache):
    result = pytester.runpytest(f"--vla-release={DENSE}", f"--vla-cache-dir={vla_cache}", "-m", "tokenizer")
    assert "test_checkpoint" not in result.stdout.str().split("collected")[-1].split("\n")[0]
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.checkpoint: pytest-vla conformance area: Megatron checkpoint*"])


def test_user_packages_named_like_ours_do_not_collide(pytester, vla_cache):
    pytester.makepyfile(
        **{
            "reference/__init__.py": "WHO = 'user'",
            "conformance/__init__.py": "WHO = 'user'",
            "conformance/test_user.py": "from conformance import WHO\ndef test_mine():\n    assert WHO == 'user'\n",
        }
    )
    result = pytester.runpytest(f"--vla-release={DENSE}", f"--vla-cache-dir={vla_cache}", "-m", "checkpoint")
    result.assert_outcomes(passed=CHECKPOINT_PASSED)
    both = pytester.runpytest("conformance", f"--vla-release={DENSE}", "-p", "no:randomly")
    both.assert_outcomes(passed=1)  # explicit paths: the user's own tests, with our plugin loaded


def test_users_own_tests_use_the_fixtures(pytester, vla_cache):
    pytester.makepyfile(
        test_downstream=textwrap.dedent("""
        import torch

        def test_release_fixtures(vla_release, vla_model, vla_tokenizer, vla_checkpoint):
            assert vla_release.name == "VLA-Driver-Tiny-Dense"
            ids = vla_tokenizer("Turn left<|act:turn_left|>", return_tensors="pt").input_ids
            assert ids[0, -1].item() == vla_tokenizer.convert_tokens_to_ids("<|act:turn_left|>")
            with torch.no_grad():
                logits = vla_model(ids).logits
            assert logits.shape[-1] == vla_model.config.vocab_size
            assert vla_checkpoint.layout.tp == 2

        def test_merged_checkpoint(vla_merged_checkpoint, vla_model_dir):
            assert (vla_merged_checkpoint / "model.safetensors").read_bytes() == (
                vla_model_dir / "model.safetensors").read_bytes()
    """)
    )
    # a subprocess: transformers' lazy modules do not survive pytester's sys.modules snapshots
    result = pytester.runpytest_subprocess(
        "test_downstream.py", f"--vla-release={DENSE}", f"--vla-cache-dir={vla_cache}"
    )
    result.assert_outcomes(passed=2)


def test_fixtures_skip_without_a_release(pytester):
    pytester.makepyfile(test_x="def test_x(vla_release):\n    pass\n")
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no --vla-release given*"])


def test_missing_optional_part_skips_with_its_path(pytester, golden_copy, vla_cache):
    release = golden_copy("dense")
    shutil.rmtree(release / "checkpoint")
    result = pytester.runpytest(f"--vla-release={release}", f"--vla-cache-dir={vla_cache}", "-m", "checkpoint", "-rs")
    result.assert_outcomes(skipped=CHECKPOINT_PASSED)
    result.stdout.fnmatch_lines([f"*no Megatron checkpoint at {release / 'checkpoint'} (optional part)*"])


def test_missing_required_part_fails_not_crashes(pytester, golden_copy, vla_cache):
    release = golden_copy("dense")
    shutil.rmtree(release / "model")
    result = pytester.runpytest(f"--vla-release={release}", f"--vla-cache-dir={vla_cache}", "-m", "checkpoint")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*missing inference checkpoint as a Hugging Face directory*model*"])


def test_release_is_never_written(pytester, golden_copy, vla_cache):
    release = golden_copy("dense")
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in release.rglob("*")}
    pytester.runpytest(f"--vla-release={release}", f"--vla-cache-dir={vla_cache}")
    assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in release.rglob("*")} == before


def test_xdist_builds_each_artefact_once(pytester, tmp_path):
    cache = tmp_path / "cache"
    result = pytester.runpytest_subprocess(
        f"--vla-release={DENSE}",
        f"--vla-cache-dir={cache}",
        "-n",
        "2",
        "-m",
        "checkpoint",
        "--vla-allow-partial",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(passed=CHECKPOINT_PASSED)
    merged = sorted(p.name for p in cache.glob("*/merged"))
    assert merged == ["merged"]  # one key, one merge, whichever worker got there first
    assert not list(cache.glob("*/.*tmp-*")), "no half-built artefacts left behind"
    result.stdout.fnmatch_lines(["VLA-Driver-Tiny-Dense v1.0.0: CONFORMS (partial: *"])


def test_n_auto_runs_a_small_release_in_process(pytester, vla_cache, monkeypatch):
    """Workers cost more than they save on a small release: ``-n auto`` starts none, and the
    verdict is the same as a serial run's."""
    monkeypatch.delenv("PYTEST_XDIST_AUTO_NUM_WORKERS", raising=False)
    result = pytester.runpytest_subprocess(
        f"--vla-release={DENSE}", f"--vla-cache-dir={vla_cache}", "-n", "auto", "-m", "card", "--vla-allow-partial"
    )
    assert "bringing up nodes" not in result.stdout.str() and "created:" not in result.stdout.str()
    result.stdout.fnmatch_lines(["VLA-Driver-Tiny-Dense v1.0.0: CONFORMS (partial: *"])


def test_n_auto_gives_a_large_release_workers_only_on_a_host_with_cpus_for_them(pytester, monkeypatch):
    """Above AUTO_WORKERS_ABOVE_BYTES, one worker per CPUS_PER_AUTO_WORKER CPUs where that makes
    two or more (at most one per area), none otherwise; the xdist variable, where set, decides."""
    from pytest_vla import plugin
    from pytest_vla.session import AREAS

    monkeypatch.delenv("PYTEST_XDIST_AUTO_NUM_WORKERS", raising=False)
    config = pytester.parseconfig(f"--vla-release={DENSE}")
    monkeypatch.setattr(plugin.os, "sched_getaffinity", lambda _pid: set(range(64)))
    assert plugin.pytest_xdist_auto_num_workers(config) == 0  # 6 MB: in-process whatever the host
    monkeypatch.setattr(plugin, "AUTO_WORKERS_ABOVE_BYTES", 1)
    assert plugin.pytest_xdist_auto_num_workers(config) == min(64 // plugin.CPUS_PER_AUTO_WORKER, len(AREAS))
    for cpus, workers in ((2, 0), (15, 0), (16, 2), (24, 3)):
        monkeypatch.setattr(plugin.os, "sched_getaffinity", lambda _pid, n=cpus: set(range(n)))
        assert plugin.pytest_xdist_auto_num_workers(config) == workers, cpus
    monkeypatch.setenv("PYTEST_XDIST_AUTO_NUM_WORKERS", "3")
    assert plugin.pytest_xdist_auto_num_workers(config) is None
    assert plugin.pytest_xdist_auto_num_workers(pytester.parseconfig()) is None


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to export the source tree")
def test_non_editable_install_runs_from_elsewhere(tmp_path):
    """`pip install .` (not editable) and run from an unrelated directory."""
    target = tmp_path / "site"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    assert (target / "vla_conformance" / "test_checkpoint.py").is_file()
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            f"--vla-release={DENSE}",
            f"--vla-cache-dir={tmp_path / 'c'}",
            "-m",
            "checkpoint",
            "--vla-allow-partial",
            "-p",
            "no:cacheprovider",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert str(target / "vla_conformance") in run.stdout or f"{CHECKPOINT_PASSED} passed" in run.stdout
    assert "VLA-Driver-Tiny-Dense v1.0.0: CONFORMS (partial: " in run.stdout


def test_malformed_files_fail_cleanly(golden_copy, run_suite):
    """Garbage in config.json and release.json: failures that name the file, no raw tracebacks."""
    release = golden_copy("dense")
    (release / "model/config.json").write_text("{not json")
    (release / "release.json").write_text("garbage")
    run = run_suite(release)
    assert run.failed
    for name, text in run.failed.items():
        assert "site-packages" not in text and "Traceback" not in text, (name, text[:2000])


def test_artefacts_built_by_another_converter_are_not_reused(tmp_path, monkeypatch):
    """An edited or upgraded converter with the same version number gets fresh artefacts."""
    from pytest_vla import cache as cache_module

    cache = cache_module.ArtefactCache(tmp_path / "cache")
    release = tmp_path / "r"
    release.mkdir()
    (release / "f.txt").write_text("x")
    before = cache.digest(release)
    assert cache.digest(release) == before
    monkeypatch.setattr(cache_module, "converter_digest", lambda: "another converter")
    assert cache.digest(release) != before


def test_long_steps_are_told_on_a_terminal_and_not_in_ci_logs(pytester, tmp_path, monkeypatch):
    from pytest_vla.cache import ArtefactCache
    from pytest_vla.plugin import _progress

    told: list[str] = []
    cache = ArtefactCache(tmp_path / "c", progress=told.append)
    cache.build("k", "merged", lambda dst: dst.mkdir(parents=True))
    cache.build("k", "merged", lambda dst: pytest.fail("built twice"))  # cached: not built, not told
    assert told[0] == "building merged ..." and told[1].startswith("building merged: done in ") and len(told) == 2
    config = pytester.parseconfig()
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.delenv("CI", raising=False)
    assert _progress(config) is not None
    monkeypatch.setenv("CI", "true")
    assert _progress(config) is None  # CI logs stay quiet
    monkeypatch.delenv("CI")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert _progress(config) is None  # piped to a file
