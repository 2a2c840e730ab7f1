"""Reproducibility conformance: config matrix, pinned Dockerfile, launch script, environment record."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from pytest_vla.findings import Findings
from pytest_vla.fixtures import Checkpoint
from pytest_vla.rules import rule
from vla_reference import read_json
from vla_reference.converter import arch_from_config
from vla_reference.errors import ReleaseError
from vla_reference.findings import Finding
from vla_reference.release import PARTS, Release
from vla_reference.repro import (
    ENVIRONMENT_FILES,
    check_dockerfile,
    check_environment,
    check_matrix,
    check_script_args,
    check_script_runs,
    compare_config_arch,
    compare_config_args,
    environment_record,
    expected_flags,
    launch_script,
    read_config,
    select_config,
)

pytestmark = pytest.mark.reproducibility


def _report(findings: Findings, problems: Iterable[Finding]) -> None:
    __tracebackhide__ = True
    findings.extend(problems)
    findings.check()


def _part(release: Release, name: str) -> Path:
    path = release.part(name)
    if path is None:
        # Why skip: reproduction parts are optional (docs/release-format.md); present ones are all checked.
        pytest.skip(f"no {PARTS[name].what.removeprefix('the ')} at {release.root / PARTS[name].path} (optional part)")
    return path


def _manifest(release: Release) -> dict[str, Any]:
    try:
        return release.manifest
    except ReleaseError:
        return {}  # reported by the manifest area


def _release_config(release: Release, configs: Path, findings: Findings) -> tuple[Path, dict[str, Any]] | None:
    """This release's config file and its content; problems go to ``findings``."""
    model_config = release.root / "model" / "config.json"
    try:
        _, arch = arch_from_config(read_json(model_config), source=model_config)
    except ReleaseError as e:
        findings.add_error(e, "config.json")
        return None
    path, problems = select_config(configs, _manifest(release), arch, root=release.root)
    findings.extend(problems)
    if path is None:
        return None
    try:
        return path, read_config(path)
    except ReleaseError as e:
        findings.add_error(e, "config unreadable")
        return None


def _args_source(release: Release, checkpoint: Checkpoint) -> str:
    try:
        return f"the training args ({checkpoint.args_file.resolve().relative_to(release.root).as_posix()})"
    except ValueError:
        return f"the training args ({checkpoint.args_file})"


@rule(
    "VLA-REPRO-001",
    fix="give every config file the matrix's keys (architecture, batch, schedule, parallel sizes, precision)",
)
def test_config_matrix_complete(vla_release: Release) -> None:
    """configs/ has one file per model size, each with the chapter's matrix (architecture, batch,
    learning-rate schedule, parallel sizes, precision)."""
    configs = _part(vla_release, "configs")
    _report(Findings("config matrix", vla_release.root), check_matrix(configs))


@rule("VLA-REPRO-002", fix="make this release's config file describe the model config.json describes")
def test_release_config_matches_model_config(vla_release: Release, vla_model_dir: Path) -> None:
    """The config file of this release's size exists and describes the model config.json describes."""
    configs = _part(vla_release, "configs")
    findings = Findings("release config vs config.json", vla_release.root)
    found = _release_config(vla_release, configs, findings)
    if found is not None:
        path, config = found
        model_config = vla_model_dir / "config.json"
        _, arch = arch_from_config(read_json(model_config), source=model_config)
        findings.extend(compare_config_arch(config, arch, path=path, against="config.json"))
    findings.check()


@rule("VLA-REPRO-003", fix="make this release's config file the run's (the training args)")
def test_release_config_matches_training_args(vla_release: Release, vla_checkpoint: Checkpoint) -> None:
    """The config file of this release's size is the run's: architecture, parallel sizes, batch, schedule, precision."""
    configs = _part(vla_release, "configs")
    found = _release_config(vla_release, configs, Findings("", vla_release.root))
    if found is None:
        # Why skip: test_release_config_matches_model_config fails on a missing config; one defect, one failure.
        pytest.skip("no config for this release's size (reported by test_release_config_matches_model_config)")
    path, config = found
    source = _args_source(vla_release, vla_checkpoint)
    problems = compare_config_args(
        config, vla_checkpoint.arch, vla_checkpoint.layout, vla_checkpoint.args, path=path, source=source
    )
    _report(Findings("release config vs training args", vla_release.root), problems)


@rule("VLA-REPRO-004", fix="pin the base image by tag and digest and every pip package with ==")
def test_dockerfile_pinned(vla_release: Release) -> None:
    """docker/Dockerfile pins its base image by tag and digest and every pip package with ==."""
    docker = _part(vla_release, "docker")
    findings = Findings("Dockerfile", vla_release.root)
    dockerfile = docker / "Dockerfile"
    if not dockerfile.is_file():
        findings.add(
            "Dockerfile missing",
            "not in docker/",
            "docker/Dockerfile",
            file=dockerfile,
            fix="add the Dockerfile that builds the training environment from a pinned base image",
        )
        findings.check()
    try:
        problems = check_dockerfile(dockerfile, search=[docker, vla_release.root])
    except ReleaseError as e:
        findings.add_error(e, "Dockerfile unreadable")
        problems = []
    _report(findings, problems)


def _script(release: Release, *, reported_by: str | None = None) -> Path:
    """The launch script; a script named outside the release fails here, or skips when
    ``reported_by`` (another check) fails on it."""
    manifest = _manifest(release)
    try:
        path = launch_script(release.root, manifest)
    except ReleaseError as e:
        if reported_by is not None:
            # Why skip: the check named fails on this, naming release.json's key.
            pytest.skip(f"the launch script is named outside the release (reported by {reported_by})")
        Findings("launch script", release.root).fail_on(e, "launch script outside the release")
    if not manifest.get("launch_script") and release.part("scripts") is None:
        # Why skip: scripts/ is an optional part and the manifest names no launch script.
        pytest.skip(f"no launch scripts at {release.root / 'scripts'} (optional part)")
    return path


@rule("VLA-REPRO-005", fix="ship an executable launch script that passes bash -n and names its inputs")
def test_launch_script_runs(vla_release: Release) -> None:
    """The launch script (release.json's launch_script or scripts/run_pretrain.sh) is there, executable,
    and `bash -n` clean."""
    path = _script(vla_release)
    try:
        problems = check_script_runs(path)
    except FileNotFoundError:
        pytest.skip("no bash on this machine to run `bash -n`")
    _report(Findings(f"launch script {path.name}", vla_release.root), problems)


@rule("VLA-REPRO-006", fix="launch with the checkpoint's parallel sizes and architecture")
def test_launch_script_matches_training_args(vla_release: Release, vla_checkpoint: Checkpoint) -> None:
    """The launch script runs with the checkpoint's parallel sizes (and its architecture, where it sets it)."""
    path = _script(vla_release, reported_by="test_launch_script_runs")
    if not path.is_file():
        pytest.skip(f"no launch script at {path} (reported by test_launch_script_runs)")
    expected = expected_flags(vla_checkpoint.arch, vla_checkpoint.layout)
    problems = check_script_args(path, expected, source=_args_source(vla_release, vla_checkpoint))
    _report(Findings(f"launch script {path.name} vs training args", vla_release.root), problems)


@rule("VLA-REPRO-007", fix="record Python, torch, CUDA and NCCL versions in docker/environment.json")
def test_environment_record(vla_release: Release) -> None:
    """docker/environment.json records the Python, torch, CUDA and NCCL versions."""
    docker = _part(vla_release, "docker")
    findings = Findings("environment record", vla_release.root)
    record = environment_record(docker)
    if record is None:
        findings.add(
            "environment record missing",
            f"none of {', '.join(ENVIRONMENT_FILES)} in docker/",
            "docker/environment.json with python, torch, cuda and nccl versions",
            file=docker / ENVIRONMENT_FILES[0],
            fix="record the versions inside the container and save them as docker/environment.json",
        )
        findings.check()
    else:
        _report(findings, check_environment(record))
