"""Set-up artefacts: constraints pin what CI installs, the Dockerfile is pinned and its command works."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from conftest import GOLDEN, REPO


def test_constraints_pin_torch_and_everything_exactly():
    lines = [line for line in (REPO / "constraints.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert "torch==2.13.0" in lines
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[^=\s]+", line) for line in lines), lines


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    assert "bash scripts/test.sh" in readme and "bash scripts/golden.sh" in readme
    assert "bash scripts/test.sh" in (REPO / ".ci/run").read_text()


def test_dockerfile_pins_base_image_and_packages():
    text = (REPO / "docker/Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", text, re.M).group(1)
    assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", base), base
    assert "-c constraints.txt" in text and "torch==2.13.0" in text


def test_docker_entrypoint_runs_locally(tmp_path):
    text = (REPO / "docker/Dockerfile").read_text()
    entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))
    assert entry[0] == "pytest" and "--vla-release=/release" in entry
    argv = [a.replace("/release", str(GOLDEN / "dense")) for a in entry[1:]]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *argv, f"--vla-cache-dir={tmp_path}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "VLA-Driver-Tiny-Dense v1.0.0: CONFORMS" in proc.stdout
