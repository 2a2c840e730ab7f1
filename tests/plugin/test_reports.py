"""The JSON and HTML reports and the JUnit properties: what a reader who was not at the terminal gets.

Every report written here is validated against the schema the package ships (``conftest.validate_report``).
The per-area meta-tests (``test_*_meta.py``) check that a failing rule and its findings show in both reports.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pytest_vla.session import PARTIAL_EXIT

from conftest import GOLDEN, validate_report

DENSE = GOLDEN / "dense"
RULE_ID = re.compile(r"VLA-[A-Z]+-\d{3}")


@pytest.fixture(scope="module")
def conforming(tmp_path_factory, vla_cache_module):
    """The whole suite on golden/dense, in a subprocess, with both reports and JUnit XML."""
    out = tmp_path_factory.mktemp("conforming")
    return out, _run(out, DENSE, vla_cache_module)


@pytest.fixture(scope="module")
def vla_cache_module(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _run(out: Path, release: Path, cache: Path, *args: str) -> int:
    import subprocess
    import sys

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            f"--vla-release={release}",
            f"--vla-cache-dir={cache}",
            f"--vla-report={out / 'report.json'}",
            f"--vla-html={out / 'report.html'}",
            f"--junitxml={out / 'junit.xml'}",
            "-p",
            "no:cacheprovider",
            "-q",
            *args,
        ],
        cwd=out,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    (out / "stdout.txt").write_text(done.stdout + done.stderr)
    return done.returncode


def test_a_conforming_release_reports_every_check_with_its_rule_and_measurements(conforming):
    out, ret = conforming
    assert ret == 0, (out / "stdout.txt").read_text()[-3000:]
    report = validate_report(out / "report.json")
    assert report["verdict"] == "CONFORMS" and report["partial"] == {} and report["interrupted"] is None
    assert report["release"] | {"path": None} == {
        "name": "VLA-Driver-Tiny-Dense",
        "version": "1.0.0",
        "date": json.loads((DENSE / "release.json").read_text())["date"],
        "path": None,
    }
    libs = report["environment"]["libraries"]
    assert {"torch", "transformers", "tokenizers", "safetensors", "pytest-vla"} <= set(libs)
    assert report["environment"]["torch_threads"] >= 1 and report["environment"]["cpu"]
    assert report["options"]["release"] == str(DENSE)
    checks = report["checks"]
    assert len({c["nodeid"] for c in checks}) == len(checks)
    assert all(RULE_ID.fullmatch(c["rule"]) for c in checks), [c["nodeid"] for c in checks if not c["rule"]]
    for area, tally in report["summary"].items():
        mine = [c for c in checks if c["area"] == area]
        assert tally == {s: sum(c["status"] == s for c in mine) for s in ("passed", "failed", "skipped")}, area
        assert tally["passed"] > 0, f"{area}: nothing passed on the golden release"
    # what the checks measured: parity per layout and sequence, every tensor's round trip per layout
    parity = {k: v for c in checks for k, v in c["measured"].get("parity", {}).items()}
    assert parity and all(s["within"] for m in parity.values() for s in m["sequences"]), parity
    eval_set = json.loads((DENSE / "golden" / "eval_set.json").read_text())["sequences"]
    assert all(len(m["sequences"]) == len(eval_set) for m in parity.values())
    round_trip = {k: v for c in checks for k, v in c["measured"].get("round_trip", {}).items()}
    assert "merged vs shipped" in round_trip and len(round_trip) >= 3, sorted(round_trip)
    assert all(v == 0.0 for tensors in round_trip.values() for v in tensors.values())
    assert len(round_trip["merged vs shipped"]) > 10


def test_junit_xml_carries_the_verdict_release_name_and_version(conforming):
    out, _ = conforming
    props = {p.get("name"): p.get("value") for p in ET.parse(out / "junit.xml").getroot().iter("property")}
    assert props["vla_verdict"] == "CONFORMS"
    assert props["vla_release_name"] == "VLA-Driver-Tiny-Dense" and props["vla_release_version"] == "1.0.0"
    assert props["vla_verdict_line"] == "VLA-Driver-Tiny-Dense v1.0.0: CONFORMS"


def test_the_html_report_is_self_contained_and_small(conforming):
    out, _ = conforming
    page = (out / "report.html").read_text()
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page), "an external resource"
    assert "@import" not in page and "url(" not in page
    assert 'id="verdict">VLA-Driver-Tiny-Dense v1.0.0: CONFORMS<' in page
    assert "<details>" in page and "<details open>" not in page  # passing areas collapsed
    assert len(page.encode()) < 1_000_000


def test_xdist_workers_give_one_report_with_every_check_once(tmp_path, conforming, vla_cache_module):
    """Under -n 2 the controller writes the one report, from both workers' results."""
    _, serial_ret = conforming
    serial = validate_report(conforming[0] / "report.json")
    ret = _run(tmp_path, DENSE, vla_cache_module, "-n", "2")
    assert ret == serial_ret == 0, (tmp_path / "stdout.txt").read_text()[-3000:]
    report = validate_report(tmp_path / "report.json")
    assert report["options"]["workers"] == 2
    # parity_loader is measured only where the logits were computed, not read from the cache
    got = {
        c["nodeid"]: (c["rule"], c["status"], sorted(set(c["measured"]) - {"parity_loader"})) for c in report["checks"]
    }
    want = {
        c["nodeid"]: (c["rule"], c["status"], sorted(set(c["measured"]) - {"parity_loader"})) for c in serial["checks"]
    }
    assert got == want
    assert report["verdict"] == "CONFORMS" and report["summary"] == serial["summary"]


def test_an_interrupted_run_leaves_a_valid_report_saying_so(pytester, tmp_path, vla_cache, monkeypatch):
    """Ctrl-C in the middle: the report is still written, valid, and its verdict is NOT CHECKED."""
    pytester.makepyfile(
        interrupter="""
        import pytest

        seen = []

        @pytest.hookimpl(tryfirst=True)
        def pytest_runtest_call(item):
            seen.append(item)
            if len(seen) == 3:
                raise KeyboardInterrupt
        """
    )
    monkeypatch.setenv("PYTHONPATH", str(pytester.path))  # where -p interrupter is found
    report = tmp_path / "report.json"
    result = pytester.runpytest_subprocess(
        f"--vla-release={DENSE}",
        f"--vla-cache-dir={vla_cache}",
        f"--vla-report={report}",
        "-m",
        "manifest",
        "-p",
        "interrupter",
        "-p",
        "no:cacheprovider",
    )
    assert result.ret == pytest.ExitCode.INTERRUPTED
    data = validate_report(report)
    assert data["verdict"] == "NOT CHECKED" and data["interrupted"], data["verdict_line"]
    assert data["verdict_line"].endswith("NOT CHECKED (interrupted: the run was interrupted)")
    assert data["exit_status"] == int(pytest.ExitCode.INTERRUPTED)


def test_a_partial_run_says_what_it_did_not_check_in_every_report(tmp_path, vla_cache_module):
    ret = _run(tmp_path, DENSE, vla_cache_module, "-m", "tokenizer or manifest")
    assert ret == PARTIAL_EXIT
    report = validate_report(tmp_path / "report.json")
    assert report["verdict"] == "CONFORMS" and report["exit_status"] == PARTIAL_EXIT
    assert set(report["partial"]) == {
        "checkpoint",
        "parity",
        "preprocessing",
        "card",
        "versioning",
        "reproducibility",
        "examples",
    }
    assert report["verdict_line"].startswith("VLA-Driver-Tiny-Dense v1.0.0: CONFORMS (partial: checkpoint, parity")
    page = (tmp_path / "report.html").read_text()
    assert "CONFORMS (partial: " in page and "not checked: deselected" in page
    props = {p.get("name"): p.get("value") for p in ET.parse(tmp_path / "junit.xml").getroot().iter("property")}
    assert props["vla_verdict_line"] == report["verdict_line"]
    assert _run(tmp_path, DENSE, vla_cache_module, "-m", "manifest", "--vla-allow-partial") == 0


def test_a_release_without_its_checkpoint_is_partial_naming_the_missing_part(golden_copy, run_suite):
    """An inference-only release cannot say CONFORMS: the checkpoint and parity areas that need
    checkpoint/ are not checked, and the verdict says why."""
    import shutil

    from vla_reference.release import write_manifest

    release = golden_copy("dense")
    shutil.rmtree(release / "checkpoint")
    write_manifest(release)
    run = run_suite(release)
    assert run.ret == PARTIAL_EXIT and not run.failed, sorted(run.failed)
    assert "checkpoint" in run.report["partial"], run.report["coverage"]
    assert "checkpoint" in run.report["partial"]["checkpoint"]  # the skip reason names checkpoint/
    assert run.report["verdict_line"].startswith(f"{run.report['release']['name']} v1.0.0: CONFORMS (partial: ")


def test_a_directory_that_is_not_a_release_gets_one_message(tmp_path, run_suite):
    """A plain Hugging Face directory: one failure saying so and how to make a release; the fix,
    applied as printed, makes that check pass."""
    import shutil
    import subprocess
    import sys

    hf = tmp_path / "hf"
    shutil.copytree(DENSE / "model", hf)
    run = run_suite(hf)
    assert list(run.failed) == ["test_directory_is_a_release"], sorted(run.failed)
    message = run.failed["test_directory_is_a_release"]
    assert message.count("not a release: this is a Hugging Face model directory") == 1, message
    assert "vla-release manifest" in message and "as model/" in message
    run.assert_reported("test_directory_is_a_release")
    assert set(run.report["partial"]) == set() and run.report["coverage"]["card"] == "not a release"
    # the fix: the directory as model/ of a release, then release.json
    release = tmp_path / "release"
    release.mkdir()
    shutil.move(hf, release / "model")
    done = subprocess.run(
        [sys.executable, "-m", "vla_reference.cli", "manifest", str(release)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    again = run_suite(release, "-k", "test_directory_is_a_release")
    assert again.passed == ["test_directory_is_a_release"], again.failed
