"""pytest hooks of pytest-vla: each delegates to the session object in the config stash."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import fixtures
from .collection import SuiteModule
from .options import add_options, read_options
from .report import Recorder, write_summary
from .session import AREAS, SESSION_KEY, SUITE_DIR, VLASession


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    session = VLASession(read_options(config))
    config.stash[SESSION_KEY] = session
    for area, description in AREAS.items():
        config.addinivalue_line("markers", f"{area}: pytest-vla conformance area: {description}")
    if not config.pluginmanager.has_plugin("vla-fixtures"):
        config.pluginmanager.register(fixtures, "vla-fixtures")
    config.pluginmanager.register(Recorder(session), "vla-recorder")
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


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is not None and session.active:
        write_summary(terminalreporter, session)
