"""Shared fixtures for pytest-vla's own tests."""

import html
import json
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# pytester's in-process runs restore sys.modules afterwards; transformers' lazy modules break when
# their submodules vanish under them, so load every class the suite may use before any run.
from transformers import (  # noqa: F401
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2LMHeadModel,
    LlamaForCausalLM,
    MistralForCausalLM,
    MixtralForCausalLM,
    Qwen2ForCausalLM,
    Qwen2MoeForCausalLM,
    Qwen3ForCausalLM,
    Qwen3MoeForCausalLM,
)

import vla_reference.processor  # noqa: E402,F401 - registers with transformers' Auto classes once, before any run

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "golden"


def another_cpu_env() -> dict[str, str]:
    """Environment variables that make this machine compute floats the way a plainer CPU would.

    torch runs its scalar kernels instead of AVX2/AVX-512 (or SVE), MKL and OpenBLAS their
    oldest kernels, NumPy only its baseline SIMD, all on one thread: a float32 reduction then
    rounds as on another machine, which is what a release built here meets in a user's CI.
    """
    env = {"ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    if platform.machine() in ("x86_64", "AMD64"):
        env |= {
            "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
            "OPENBLAS_CORETYPE": "Prescott",
            "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR",
        }
    elif platform.machine() in ("aarch64", "arm64"):
        env |= {"OPENBLAS_CORETYPE": "ARMV8"}
    return env


@pytest.fixture
def golden_copy(tmp_path):
    """A writable copy of a golden release (``golden_copy("dense")``)."""

    def copy(name: str) -> Path:
        dst = tmp_path / f"release-{name}"
        shutil.copytree(GOLDEN / name, dst)
        return dst

    return copy


@pytest.fixture(scope="session")
def vla_cache(tmp_path_factory):
    """One artefact cache for every suite run of this test session (keys are content digests)."""
    return tmp_path_factory.mktemp("vla-cache")


@dataclass
class SuiteRun:
    """Per-test outcomes of one in-process suite run, and the reports it wrote."""

    ret: int
    failed: dict[str, str] = field(default_factory=dict)
    passed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    output: str = ""
    report: dict[str, Any] = field(default_factory=dict)  # the JSON report, valid against the schema
    html: str = ""

    def check(self, name: str) -> dict[str, Any]:
        """The JSON report's record of the check ``name`` (a test name, as in ``failed``)."""
        found = [c for c in self.report["checks"] if c["nodeid"].split("::", 1)[-1] == name]
        assert len(found) == 1, f"{name}: {len(found)} records in the report"
        return found[0]

    def assert_reported(self, name: str) -> dict[str, Any]:
        """The failed check ``name`` is in both reports as a person acts on it: its rule ID, its
        findings (what, file or key, fix) in the JSON, and the same rule and findings in the HTML.
        Returns the JSON record."""
        __tracebackhide__ = True
        check = self.check(name)
        assert check["status"] == "failed", check
        assert check["rule"] and self.failed[name].startswith(f"[{check['rule']}] "), (check["rule"], self.failed[name])
        assert check["findings"], check
        assert self.report["verdict"] == "DOES NOT CONFORM" and check["rule"] in self.report["verdict_line"]
        for f in check["findings"]:
            assert f["what"] and f["observed"], f
        first = check["findings"][0]
        assert first["file"] or first["key"], first
        assert any(f["fix"] for f in check["findings"]), check["findings"]
        failure = self.html.split(f'<div class="failure" id="{html.escape(check["nodeid"])}">', 1)
        assert len(failure) == 2, f"{check['nodeid']}: no failure block in the HTML report"
        block = failure[1].split('<div class="failure"', 1)[0]
        assert f"<code>{check['rule']}</code>" in block, block[:500]
        assert html.escape(first["what"]) in block and html.escape(first["observed"]) in block, block[:2000]
        return check


def validate_report(path: Path) -> dict[str, Any]:
    """A JSON report read and validated against the schema the package ships."""
    import jsonschema

    from pytest_vla.outputs import SCHEMA_FILE

    def strict(name: str) -> None:
        raise ValueError(f"{path}: {name} is not JSON")

    report = json.loads(path.read_text(), parse_constant=strict)
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(report)
    return report


@pytest.fixture
def run_suite(pytester, vla_cache, tmp_path_factory):
    """Run the installed suite on a release, in process; returns outcomes by test name and the
    JSON (validated) and HTML reports it wrote."""

    def run(release: Path, *args: str, cache: Path | None = None) -> SuiteRun:
        out_dir = tmp_path_factory.mktemp("reports")
        reports = (f"--vla-report={out_dir / 'report.json'}", f"--vla-html={out_dir / 'report.html'}")
        reprec = pytester.inline_run(
            f"--vla-release={release}",
            f"--vla-cache-dir={cache or vla_cache}",
            "-p",
            "no:cacheprovider",
            *reports,
            *args,
        )
        out = SuiteRun(ret=int(reprec.ret))
        if (out_dir / "report.json").is_file():
            out.report = validate_report(out_dir / "report.json")
            out.html = (out_dir / "report.html").read_text()
        for rep in reprec.getreports("pytest_runtest_logreport"):
            name = rep.nodeid.split("::", 1)[-1]
            if rep.failed:
                out.failed[name] = str(rep.longrepr)
            elif rep.skipped:
                out.skipped[name] = str(rep.longrepr)
            elif rep.when == "call":
                out.passed.append(name)
        return out

    return run


# The longest tests, started first: with xdist each worker takes tests in collection order, and
# a long test collected last would run alone at the end while the other worker idles.
LONGEST_FIRST = ("tests/test_guide.py::test_every_command_in_the_guide_runs_as_printed", "tests/plugin/test_fuzz.py")


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: not item.nodeid.startswith(LONGEST_FIRST))  # stable: the rest keep their order
