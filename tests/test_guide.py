"""Every command in docs/guide.md runs as printed.

The guide's ```bash and ```python blocks run in order, in one scratch directory that holds the
golden releases as ``golden/`` (read-only) and this environment's commands on PATH; each must
exit 0 (a line the guide starts with ``!`` must fail, as bash reads it). The CI examples
(```yaml) run their ``run:`` and ``script:`` lines there with ``releases/candidate`` a golden
release; their ``pip install`` line is resolved with ``--dry-run --no-deps --no-index`` against a
wheel built from this checkout (this machine has no package registry).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import GOLDEN, REPO

GUIDE = REPO / "docs" / "guide.md"
BLOCK = re.compile(r"^```(bash|python|yaml)\n(.*?)^```$", re.S | re.M)


def blocks(kind: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(GUIDE.read_text()) if lang == kind]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """The directory the guide's commands run in: golden/ (a read-only copy), and the env."""
    root = tmp_path_factory.mktemp("guide")
    shutil.copytree(GOLDEN, root / "golden")
    for path in (root / "golden").rglob("*"):
        if path.is_file():
            path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    env = {
        **os.environ,
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
        "XDG_CACHE_HOME": str(root / ".cache"),
        "PYTEST_ADDOPTS": "-p no:cacheprovider -q",
    }
    return root, env


def run(command: list[str], root: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, check=False)


def test_the_guide_has_the_sections_the_issue_names():
    text = GUIDE.read_text()
    for heading in (
        "## Quick start",
        "## CI integration",
        "## Authoring a release with `pack`",
        "### For a model that is not ours",
        "## Checking a fine-tune",
        "## Updating snapshots on a version bump, end to end",
        "## Troubleshooting",
    ):
        assert heading in text, heading
    assert len(blocks("yaml")) == 2 and len(blocks("bash")) >= 6 and len(blocks("python")) == 1


def test_every_command_in_the_guide_runs_as_printed(scratch):
    root, env = scratch
    for lang, body in BLOCK.findall(GUIDE.read_text()):
        if lang == "yaml":
            continue
        if lang == "python":
            (root / "block.py").write_text(body)
            done = run([sys.executable, "block.py"], root, env)
        else:
            done = run(["bash", "-euo", "pipefail", "-c", body], root, env)
        assert done.returncode == 0, f"{body}\n--- exit {done.returncode}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    # what the guide says the commands leave behind
    assert (root / "reports/dense.json").is_file() and (root / "reports/dense.html").is_file()
    for release in ("my-release", "acme-release", "ft", "v1.1.0", "broken"):
        assert (root / "out" / release / "release.json").is_file(), release
    assert not (root / "out/ft-patch").exists()  # the refused pack left nothing
    assert '"version": "1.1.0"' in (root / "out/v1.1.0/release.json").read_text()


def _ci_steps(text: str) -> tuple[dict[str, str], list[str]]:
    """(environment, commands) of a GitHub Actions workflow or a GitLab CI file."""
    doc = yaml.safe_load(text)
    if "jobs" in doc:
        env = dict(doc.get("env", {}))
        commands = [s["run"] for job in doc["jobs"].values() for s in job["steps"] if "run" in s]
    else:
        (job,) = [v for v in doc.values() if isinstance(v, dict) and "script" in v]
        env, commands = dict(job.get("variables", {})), list(job["script"])
    return env, commands


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    """A wheel of this checkout, for the CI examples' pip line."""
    out = tmp_path_factory.mktemp("wheels")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    return out


@pytest.mark.parametrize("which", [0, 1], ids=["github-actions", "gitlab-ci"])
def test_the_ci_examples_run(which, tmp_path, wheels):
    env_vars, commands = _ci_steps(blocks("yaml")[which])
    assert env_vars == {"RELEASE": "releases/candidate"}
    root = tmp_path / "repo"
    (root / "releases").mkdir(parents=True)
    shutil.copytree(GOLDEN / "dense", root / "releases/candidate")
    shutil.copyfile(REPO / "constraints.txt", root / "constraints.txt")
    env = {
        **os.environ,
        **env_vars,
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "PYTEST_ADDOPTS": "-p no:cacheprovider -q",
    }
    for command in commands:
        if command.startswith("pip install"):
            args = command.split()[2:]
            check = [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--dry-run",
                "--no-deps",
                "--no-index",
                "--ignore-installed",
            ]
            done = run([*check, "--find-links", str(wheels), *args], root, env)
            assert "Would install pytest-vla" in done.stdout, done.stdout + done.stderr
            continue
        done = run(["bash", "-euo", "pipefail", "-c", command], root, env)
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    assert {p.name for p in (root / "reports").iterdir()} == {"verdict.json", "verdict.html", "junit.xml"}
    assert any((root / ".vla-cache").iterdir())  # the cached artefacts the workflow keeps
