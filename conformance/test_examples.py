"""The release's demos (the chapter's 24.3): present, parse, stock imports, the shipped processor,
no path outside the release; with ``--vla-run-examples``, each known demo run confined
(vla_reference.examples, docs/examples.md). Reading is always safe; running is opt-in, since it
runs code from the release."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from pytest_vla.findings import Findings
from pytest_vla.rules import rule
from pytest_vla.session import VLASession
from vla_reference.errors import ReleaseError
from vla_reference.examples import (
    INVOCATIONS,
    REQUIRED_EXAMPLES,
    example_files,
    hand_preprocessing,
    outside_paths,
    parse_example,
    run_example,
    unavailable_imports,
)
from vla_reference.findings import Finding
from vla_reference.release import Release

pytestmark = pytest.mark.examples

_CONTRACT = "docs/examples.md"


def _check_each(release: Release, title: str, check: Callable[[ast.Module, Path], list[Finding]]) -> None:
    """``check`` on every demo that parses (those that do not are test_examples_parse's finding)."""
    __tracebackhide__ = True
    findings = Findings(title, release.root)
    for path, tree in _parsed(release):
        findings.extend(check(tree, path))
    findings.check()


def _parsed(release: Release) -> list[tuple[Path, ast.Module]]:
    """The demos that parse (those that do not are test_examples_parse's finding)."""
    out = []
    for path in example_files(release.root):
        try:
            out.append((path, parse_example(path)))
        except ReleaseError:
            continue
    if not out:
        # Why skip: test_examples_present fails on a release with no demos, naming the files.
        pytest.skip(f"no demo in {release.root / 'examples'} to read (reported by test_examples_present)")
    return out


@rule("VLA-EX-001", fix=f"ship the demos in examples/ ({', '.join(REQUIRED_EXAMPLES)}; see {_CONTRACT})")
def test_examples_present(vla_release: Release) -> None:
    """The release ships the chapter's demos: examples/cli_demo.py and examples/inference_example.py."""
    findings = Findings("demos", vla_release.root)
    for name in REQUIRED_EXAMPLES:
        path = vla_release.root / "examples" / name
        if not path.is_file() or path.is_symlink():
            findings.add(
                "demo missing",
                "absent" if not path.exists() else "not a regular file",
                file=path,
                fix=f"write {name} as {_CONTRACT} describes and ship it (vla-release pack --examples DIR)",
            )
    findings.check()


@rule("VLA-EX-002", fix="make every examples/*.py valid Python 3 (UTF-8, at most 1 MiB)")
def test_examples_parse(vla_release: Release) -> None:
    """Every demo is Python that parses (read, never imported)."""
    findings = Findings("demos parse", vla_release.root)
    for path in example_files(vla_release.root):
        try:
            parse_example(path)
        except ReleaseError as e:
            findings.add_error(e, "demo does not parse")
    findings.check()


@rule("VLA-EX-003", fix="import only the standard library, the release's dependencies and files beside the demo")
def test_examples_import_only_what_the_environment_provides(vla_release: Release) -> None:
    """Every module a demo imports is in the environment (found without importing it)."""
    _check_each(vla_release, "demo imports", unavailable_imports)


@rule("VLA-EX-004", fix="preprocess through the release's processor (AutoProcessor.from_pretrained), never by hand")
def test_examples_use_the_release_processor(vla_release: Release) -> None:
    """No demo preprocesses by hand (rescaling by 255, normalisation constants, torchvision
    transforms), and a demo that loads the model loads the release's processor too."""
    _check_each(vla_release, "demo preprocessing", hand_preprocessing)


@rule("VLA-EX-005", fix="take the model directory and inputs as arguments; name no path outside the release")
def test_examples_name_no_path_outside_the_release(vla_release: Release) -> None:
    """No demo names an absolute path, a home-relative one or one that climbs out with ``..``."""
    _check_each(vla_release, "demo paths", outside_paths)


def _memory_bound(release: Release, mib: float | None) -> int:
    """Bytes of private memory a demo may allocate: ``--vla-examples-memory``, or 2 GiB for the
    interpreter, torch and transformers plus 4x the model's weight bytes (a bf16 model upcast to
    float32 is 2x; the rest is headroom for activations and one transient copy)."""
    if mib is not None:
        return int(mib * 2**20)
    model = release.root / "model"
    weights = sum(p.stat().st_size for p in model.glob("*.safetensors") if p.is_file()) if model.is_dir() else 0
    return 2**31 + 4 * weights


@rule(
    "VLA-EX-006",
    fix="make the demo exit 0 within the time and memory bounds when run as docs/examples.md says, "
    "reading only the release",
)
@pytest.mark.parametrize("name", sorted(INVOCATIONS))
def test_example_runs(name: str, vla_release: Release, vla_session: VLASession, tmp_path: Path) -> None:
    """Run as documented, confined (a fresh working directory, a time bound, the hub offline, no
    network, reads confined to the release): the demo exits 0 and prints its answer."""
    script = vla_release.root / "examples" / name
    if not vla_session.options.run_examples:
        # Why skip: running a demo runs code from the release; --vla-run-examples opts in.
        pytest.skip("demos are run only with --vla-run-examples (it runs code from the release)")
    if not script.is_file():
        # Why skip: a missing required demo is test_examples_present's failure; the others are optional.
        pytest.skip(f"{script} not shipped")
    image = tmp_path / "scene.png"
    Image.new("RGB", (48, 32), (90, 90, 90)).save(image)
    model = str((vla_release.root / "model").resolve())
    args = [a.format(model=model, image=str(image)) for a in INVOCATIONS[name]]
    memory = _memory_bound(vla_release, vla_session.options.examples_memory_mib)
    run = run_example(
        script, vla_release.root, args, timeout=vla_session.options.examples_timeout, inputs=[image], memory=memory
    )
    findings = Findings(f"demo {name}", vla_release.root)
    command = f"python examples/{name} {' '.join(INVOCATIONS[name])}"
    for refused in run.refused:
        findings.add(
            f"demo {refused['kind']}",
            refused["what"],
            "only the release, its working directory and the installed environment",
            file=script,
            fix="read only the files given on the command line and the release's own files",
        )
    if run.timed_out:
        findings.add(
            "demo did not finish",
            f"killed after {run.seconds:.0f} s",
            f"exit within {vla_session.options.examples_timeout:.0f} s (--vla-examples-timeout)",
            file=script,
            fix=f"make `{command}` finish on the release's model",
        )
    elif run.out_of_memory:
        findings.add(
            "demo ran out of its memory bound",
            f"MemoryError after {run.seconds:.0f} s",
            f"at most {memory / 2**20:.0f} MiB of private memory (--vla-examples-memory)",
            file=script,
            fix=f"make `{command}` run within {memory / 2**20:.0f} MiB (load the weights with safetensors, "
            "decode images with Pillow's MAX_IMAGE_PIXELS on), or raise --vla-examples-memory",
        )
    elif run.returncode != 0:
        tail = [line for line in run.stderr.strip().splitlines() if line.strip()][-1:] or ["(no output)"]
        findings.add(
            "demo failed",
            f"exit status {run.returncode}: {tail[0][:300]}",
            "exit status 0",
            file=script,
            fix=f"make `{command}` exit 0 on the release's model",
        )
    elif not run.stdout.strip():
        findings.add("demo printed nothing", "empty stdout", "the model's answer", file=script, fix="print the answer")
    findings.check()
