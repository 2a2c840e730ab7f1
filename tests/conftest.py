"""Shared fixtures for pytest-vla's own tests."""

import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path

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
    """Per-test outcomes of one in-process suite run."""

    ret: int
    failed: dict[str, str] = field(default_factory=dict)
    passed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    output: str = ""


@pytest.fixture
def run_suite(pytester, vla_cache):
    """Run the installed suite on a release, in process; returns outcomes by test name."""

    def run(release: Path, *args: str, cache: Path | None = None) -> SuiteRun:
        reprec = pytester.inline_run(
            f"--vla-release={release}", f"--vla-cache-dir={cache or vla_cache}", "-p", "no:cacheprovider", *args
        )
        out = SuiteRun(ret=int(reprec.ret))
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
