"""A bounded fuzz campaign: hypothesis mutates copies of golden/dense and the suite must hold.

Each example applies one :class:`mutations.Mutation` (a byte flipped, a file truncated, a JSON
field deleted, retyped or duplicated, a file removed, renamed, linked out, replaced by a FIFO or
a directory, a path field made hostile; release.json refreshed or not) and runs the whole suite
in a subprocess. The oracle (``mutations.judge``): a verdict within the time and memory bounds,
no internal error, every failure naming a file inside the release, the release unchanged.

CI runs a fixed, derandomized set of examples (so a red run is reproducible); the long random
campaign is ``benchmarks/fuzz.py``, whose numbers docs/security.md records.
"""

from __future__ import annotations

import shutil

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import mutations
from conftest import GOLDEN

FILES = mutations.release_files(GOLDEN / "dense")
EXAMPLES = 3  # each a whole-suite subprocess run, ~13 s warm here; the long campaign is benchmarks/fuzz.py


def mutation_strategy() -> st.SearchStrategy[mutations.Mutation]:
    return st.builds(
        mutations.Mutation,
        kind=st.sampled_from(mutations.KINDS),
        file=st.sampled_from(FILES),
        pick=st.integers(0, 1 << 20),
        value=st.integers(0, 255),
        refresh=st.booleans(),
    )


@pytest.fixture(scope="module")
def fuzz_cache(tmp_path_factory):
    """One artefact cache for every example (keys are content digests: a mutated file misses)."""
    return tmp_path_factory.mktemp("fuzz-cache")


@pytest.mark.xdist_group("fuzz")
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: each example is a whole-suite run; the
    # failing mutation is printed as drawn, and benchmarks/fuzz.py reproduces it
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(m=mutation_strategy())
def test_a_mutated_release_gets_a_verdict_naming_its_file(m, tmp_path_factory, fuzz_cache):
    work = tmp_path_factory.mktemp("fuzz")
    release, outside = work / "release", work / "outside"
    shutil.copytree(GOLDEN / "dense", release)
    outside.mkdir()
    applied = mutations.apply(m, release, outside)
    before = mutations.snapshot(release)
    status, output, seconds, peak = mutations.run_suite(release, fuzz_cache, work / "report.json")
    verdict = mutations.judge(m, release, before, status, output, seconds, work / "report.json", peak)
    assert not verdict.problems, f"{m}: " + "\n".join(verdict.problems)
    if applied and not m.refresh:
        # the bytes changed and release.json was not refreshed: the manifest must see it
        assert verdict.failed, f"{m}: CONFORMS on a release whose bytes no longer match release.json"


def test_the_oracle_fails_a_run_over_its_memory_bound(tmp_path, fuzz_cache):
    """The memory half of the oracle can fail: a plugin loaded into the run that allocates 3 GiB
    meets the 2 GiB bound on private memory, and the run is judged over it, not hung or swapping."""
    release = tmp_path / "release"
    shutil.copytree(GOLDEN / "dense", release)
    (tmp_path / "hog.py").write_text("HOG = bytearray(3 * 2**30)\n")  # importable: -m pytest puts cwd first
    before = mutations.snapshot(release)
    report = tmp_path / "report.json"
    status, output, seconds, peak = mutations.run_suite(release, fuzz_cache, report, "-p", "hog", timeout=60)
    verdict = mutations.judge("hog", release, before, status, output, seconds, report, peak)
    assert status not in (None, 0) and "MemoryError" in output, output[-2000:]
    assert peak < mutations.MEMORY_BOUND_MIB, peak
    assert any(p.startswith("over the memory bound of 2048 MiB") for p in verdict.problems), verdict.problems
