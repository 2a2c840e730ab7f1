"""pytest hooks of pytest-vla: each delegates to the session object in the config stash."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from vla_reference.release import release_files

from . import fixtures
from .collection import SuiteModule
from .options import add_options, read_options
from .outputs import write_outputs
from .report import write_summary
from .rules import RULE_MARK
from .session import AREAS, PARTIAL_EXIT, SESSION_KEY, SUITE_DIR, VLASession


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def _progress(config: pytest.Config) -> Callable[[str], None] | None:
    """Long steps (merge, reshard, parity ranks) are told on an interactive terminal; in CI logs
    (``CI`` set, output not a terminal, xdist workers, ``-q -q``) nothing is written."""
    if hasattr(config, "workerinput") or os.environ.get("CI") or not sys.stdout.isatty() or config.option.verbose < -1:
        return None

    def tell(message: str) -> None:
        tr = config.pluginmanager.get_plugin("terminalreporter")
        capture = config.pluginmanager.get_plugin("capturemanager")
        if tr is None:
            return
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            tr.write_line(f"pytest-vla: {message}", cyan=True)

    return tell


# Below this many bytes of release, ``-n auto`` runs the suite in-process: every xdist worker
# imports torch and transformers and reopens the release (3-5 s each here), more than the checks
# of a small release take together (benchmarks/suite.py, docs/scale.md).
AUTO_WORKERS_ABOVE_BYTES = 1 << 30
# The heavy checks are parallel inside already (a process per rank, hashing threads): a worker
# is worth its start only with this many CPUs for each. Measured on 2 CPUs and a 19.5 GB release,
# 2 workers took the same time as none on a first run and 4.4 s longer warm (docs/scale.md).
CPUS_PER_AUTO_WORKER = 8


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto`` sized by the release and the host: no worker for a small release, nor where
    fewer than two workers would get CPUS_PER_AUTO_WORKER CPUs each (in-process is faster then);
    otherwise one per CPUS_PER_AUTO_WORKER CPUs, at most one per area.
    ``PYTEST_XDIST_AUTO_NUM_WORKERS``, or no release, leaves it to xdist."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    release = read_options(config).release
    if release is None:
        return None
    size = 0
    for rel in release_files(release):  # regular files only, as the manifest lists them
        with contextlib.suppress(OSError):  # removed since it was listed
            size += (release / rel).stat().st_size
    workers = min(len(os.sched_getaffinity(0)) // CPUS_PER_AUTO_WORKER, len(AREAS))
    return 0 if size < AUTO_WORKERS_ABOVE_BYTES or workers < 2 else workers


def pytest_configure(config: pytest.Config) -> None:
    session = VLASession(read_options(config), progress=_progress(config))
    config.stash[SESSION_KEY] = session
    for area, description in AREAS.items():
        config.addinivalue_line("markers", f"{area}: pytest-vla conformance area: {description}")
    config.addinivalue_line("markers", f"{RULE_MARK}(id, fix): the conformance rule a test proves")
    if not config.pluginmanager.has_plugin("vla-fixtures"):
        config.pluginmanager.register(fixtures, "vla-fixtures")
    config.pluginmanager.register(session.results, "vla-results")
    if session.active and config.args_source is not pytest.Config.ArgsSource.ARGS:
        config.args[:] = [str(SUITE_DIR)]


def pytest_collect_directory(path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if path == SUITE_DIR:
        return pytest.Dir.from_parent(parent, path=path)
    return None


def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    if module_path.parent == SUITE_DIR:
        return SuiteModule.from_parent(parent, path=module_path)
    return None


IS_A_RELEASE: str = "test_directory_is_a_release"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A directory that is not a release at all gets one failure saying so, not one per check."""
    vla = config.stash.get(SESSION_KEY, None)
    release = vla.release if vla is not None else None
    if vla is None or release is None or release.not_a_release() is None:
        return
    keep = [i for i in items if getattr(i, "originalname", i.name) == IS_A_RELEASE]
    if keep:
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep
        vla.not_checked = "not a release"


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is not None and session.active:
        write_summary(terminalreporter, session)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    vla = session.config.stash.get(SESSION_KEY, None)
    if vla is None or not vla.active or hasattr(session.config, "workerinput"):
        return  # xdist workers: the controller writes the one report
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        vla.interrupted = "the run was interrupted"
    elif session.shouldfail or session.shouldstop:
        vla.interrupted = str(session.shouldfail or session.shouldstop)
    final = int(exitstatus)
    if exitstatus == pytest.ExitCode.OK and vla.partial() and not vla.options.allow_partial:
        final = session.exitstatus = PARTIAL_EXIT
    write_outputs(session.config, vla, final)


def pytest_unconfigure(config: pytest.Config) -> None:
    """After a ``--snapshot-update`` run (its snapshot files written), release.json's entries for
    the snapshots are refreshed, and only those: a stale entry elsewhere stays a finding. The
    checks of release.json against the files skipped in that run (pytest_vla.snapshots)."""
    session = config.stash.get(SESSION_KEY, None)
    if session is None or not session.active or hasattr(config, "workerinput"):
        return
    root = session.options.release
    if not getattr(config.option, "update_snapshots", False) or root is None or not (root / "release.json").is_file():
        return
    from vla_reference.errors import ReleaseError
    from vla_reference.preprocessing import SNAPSHOT_DIR
    from vla_reference.release import refresh_entries

    try:
        changed = refresh_entries(root, SNAPSHOT_DIR)
    except ReleaseError as e:
        print(f"pytest-vla: --snapshot-update: release.json not refreshed: {e}", file=sys.stderr)
        return
    if changed:
        print(
            f"pytest-vla: --snapshot-update: refreshed {len(changed)} entries of {root / 'release.json'}",
            file=sys.stderr,
        )
