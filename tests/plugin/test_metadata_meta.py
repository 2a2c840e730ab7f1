"""Every metadata check can fail: on a release broken one way, exactly that check fails, naming file, key and fix.

Areas: card, versioning, manifest, reproducibility. Each break edits a copy of golden/dense; the
suite runs in process on that area only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from conftest import GOLDEN
from releases import run_printed_fix

CARD = "model/README.md"
# the inner runs need no unraisable-exception sweep (a gc.collect per run: half of its time)
FAST = ("-p", "no:unraisableexception", "-p", "no:threadexception")


def edit(release: Path, rel: str, fn) -> None:
    path = release / rel
    path.write_text(fn(path.read_text(encoding="utf-8")), encoding="utf-8")


def edit_json(release: Path, rel: str, fn) -> None:
    path = release / rel
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data, indent=2))


def cut(start: str, end: str):
    """Remove the card text from the line starting with ``start`` up to the line starting with ``end``."""

    def fn(text: str) -> str:
        m = re.search(rf"^{re.escape(start)}.*?(?=^{re.escape(end)})", text, re.S | re.M)
        assert m, (start, end)
        return text[: m.start()] + text[m.end() :]

    return fn


def replace(old: str, new: str):
    def fn(text: str) -> str:
        assert old in text, old
        return text.replace(old, new)

    return fn


def card(fn):
    return lambda r: edit(r, CARD, fn)


def front_matter(key: str, value: str):
    return card(lambda t: re.sub(rf"^{key}: .*$", f"{key}: {value}", t, count=1, flags=re.M))


def write(rel: str, text: str, mode: int | None = None):
    def fn(r: Path) -> None:
        (r / rel).parent.mkdir(parents=True, exist_ok=True)
        (r / rel).write_text(text)
        if mode is not None:
            (r / rel).chmod(mode)

    return fn


MIT = """MIT License

Copyright (c) 2026 pytest-vla contributors

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and associated
documentation files (the "Software"), to deal in the Software without restriction.
"""

CARD_BREAKS = {
    "card-missing": (
        lambda r: (r / CARD).unlink(),
        "test_card_present",
        r"model card missing: none of model/README.md, model/MODEL_CARD.md, MODEL_CARD.md, expected model/README.md "
        r"\[model\]. Fix: write the model card as model/README.md",
    ),
    "front-matter-not-yaml": (
        front_matter("license", "[apache-2.0"),
        "test_card_present",
        r"front matter unreadable: front matter is not valid YAML: .*\(line \d+\).* "
        r"\[model/README.md:front matter\]. Fix: fix the YAML",
    ),
    "front-matter-value-of-the-wrong-type": (
        front_matter("library_name", "[transformers, safetensors]"),
        "test_card_present",
        r"front matter value of the wrong type: library_name: \['transformers', 'safetensors'\], expected a "
        r"string \[model/README.md:front matter:library_name\]. Fix: write 'library_name' as a string",
    ),
    "front-matter-date-that-is-a-list": (
        front_matter("release_date", "[2026, 11, 1]"),
        "test_card_present",
        r"front matter value of the wrong type: release_date: \['2026', '11', '1'\], expected a date \(YYYY-MM-DD\) "
        r"\[model/README.md:front matter:release_date\]",
    ),
    "basic-information-removed": (
        card(cut("## Model Details", "## Intended Use")),
        "test_card_section[basic_information]",
        r"basic information missing: no heading or label for it .*\[model/README.md:basic_information\]. "
        r"Fix: add a '## Model Details' section",
    ),
    "intended-use-removed": (
        card(cut("## Intended Use", "## Training Data")),
        "test_card_section[intended_use]",
        r"intended use missing: .*\[model/README.md:intended_use\]. Fix: add an '## Intended Use' section",
    ),
    "out-of-scope-use-removed": (
        card(cut("### Out-of-Scope Use", "## Training Data")),
        "test_card_section[intended_use]",
        r"out-of-scope use not stated: no 'out-of-scope use' heading, label or statement in intended use "
        r"\[model/README.md:intended_use.out_of_scope\]. Fix: add a '### Out-of-Scope Use' subsection",
    ),
    "training-data-removed": (
        card(cut("## Training Data", "## Evaluation")),
        "test_card_section[training_data]",
        r"training data missing: .*\[model/README.md:training_data\]. Fix: add a '## Training Data' section",
    ),
    "evaluation-removed": (
        card(cut("## Evaluation", "### Limitations")),
        "test_card_section[evaluation]",
        r"evaluation missing: .*\[model/README.md:evaluation\]. Fix: add an '## Evaluation' section",
    ),
    "results-table-removed": (
        card(lambda t: re.sub(r"^\|.*\n", "", t, flags=re.M).replace("### Results\n", "### Results\nBit-exact.\n")),
        "test_card_section[evaluation]",
        r"results table not stated: .*\[model/README.md:evaluation.results_table\]. Fix: add a results table",
    ),
    "limitations-removed": (
        card(cut("### Limitations", "## Ethical Considerations")),
        "test_card_section[limitations]",
        r"limitations missing: .*\[model/README.md:limitations\]. Fix: add a '## Limitations' section",
    ),
    "ethical-considerations-removed": (
        card(cut("## Ethical Considerations", "## Citation")),
        "test_card_section[ethical_considerations]",
        r"ethical considerations missing: .*\[model/README.md:ethical_considerations\]. "
        r"Fix: add an '## Ethical Considerations' section",
    ),
    "citation-removed": (
        card(lambda t: t[: t.index("## Citation")]),
        "test_card_section[citation]",
        r"citation missing: .*\[model/README.md:citation\]. Fix: add a '## Citation' section with a BibTeX entry",
    ),
    "bibtex-broken": (
        card(replace("  year   = {2026},", "  year   {2026},")),
        "test_card_section[citation]",
        r"BibTeX does not parse: found '\{', expected '=' after field 'year' \(line \d+\), expected entries of the "
        r"form .*\[model/README.md:citation.bibtex:vla_golden_dense\]. Fix: fix the entry",
    ),
    "placeholder-left": (
        card(replace("contains no personal data.", "contains no personal data. TODO: link the data card.")),
        "test_card_has_no_placeholders",
        r"placeholder text: 'TODO: link the data card.' in 'Training Data > Data Governance' \(line \d+\), "
        r"expected the actual content "
        r"\[model/README.md:Training Data > Data Governance\]. Fix: write the content",
    ),
    "template-comment-left": (
        card(replace("### Risks\n", "### Risks\n<!-- Describe the risks. -->\n")),
        "test_card_has_no_placeholders",
        r"leftover HTML comment: '<!-- Describe the risks. -->' in 'Ethical Considerations > Risks' "
        r"\(line \d+\) \[model/README.md:Ethical Considerations > Risks\]. Fix: delete the template comment",
    ),
    "empty-section": (
        card(lambda t: t + "\n## Glossary\n"),
        "test_card_has_no_placeholders",
        r"empty section: 'Glossary' has nothing under it \(line \d+\), expected content "
        r"\[model/README.md:Glossary\]. Fix: write the content, or delete the heading",
    ),
    "limitation-topic-missing": (
        card(cut("- **Causal reasoning:**", "## Ethical Considerations")),
        "test_card_limitations_cover_the_chapter_topics",
        r"limitations do not discuss causal reasoning: .* \[model/README.md:limitations.causal_reasoning\]. "
        r"Fix: state that the model learns correlations",
    ),
    "license-not-spdx": (
        front_matter("license", "apache2"),
        "test_card_license",
        r"unknown license identifier: 'apache2', expected an SPDX identifier .*"
        r"\[model/README.md:front matter:license\]. Fix: write 'apache-2.0'",
    ),
    "license-file-disagrees": (
        write("LICENSE", MIT),
        "test_card_license",
        r"LICENSE file does not match the card: LICENSE holds MIT, expected Apache-2.0 as the card states "
        r"\[LICENSE:license\]. Fix: ship the Apache-2.0 text in LICENSE, or correct the card's license",
    ),
    "card-version-differs": (
        front_matter("version", "1.0.1"),
        "test_card_version_matches_release",
        r"card version differs from release.json: 1.0.1 in front matter:version, expected 1.0.0 \(release.json\) "
        r"\[model/README.md:basic_information.version\]. "
        r"Fix: in the release: `vla-release manifest \. --version 1\.0\.0`",
    ),
    "release-date-in-future": (
        card(lambda t: t.replace("2026-11-01", "2099-01-01")),
        "test_card_release_date",
        r"release date in the future: '?2099-01-01'?.* \[model/README.md:front matter:release_date\]. "
        r"Fix: correct the release date",
    ),
    "release-date-not-iso": (
        card(replace("- **Release date:** 2026-11-01", "- **Release date:** 1 November 2026")),
        "test_card_release_date",
        r"release date not ISO 8601: '1 November 2026' in label 'Release date' \(line \d+\), expected YYYY-MM-DD "
        r"\[model/README.md:basic_information.release_date\]. Fix: write the date as YYYY-MM-DD \(2026-11-01\)",
    ),
    "parameter-count-off": (
        front_matter("parameters", "300000"),
        "test_card_parameter_count",
        r"stated parameter count differs from the weights: '300000' = 300,000 in front matter:parameters "
        r"\(\+\d+\.\d%\), expected 218,304 ± 5% .*\[model/README.md:basic_information.parameters\]. Fix: state 218,304",
    ),
    "context-length-off": (
        front_matter("context_length", "512"),
        "test_card_context_length",
        r"stated context length differs from config.json: '512' in front matter:context_length, expected 256 "
        r"\(config.json max_position_embeddings\) \[model/README.md:basic_information.context_length\]. "
        r"Fix: state 256 tokens",
    ),
}


def _flip_one(release: Path) -> None:
    f = release / "model/model.safetensors"
    tensors = load_file(f)
    tensors["model.layers.2.self_attn.o_proj.weight"][3, 5] *= -1
    save_file(tensors, f, metadata={"format": "pt"})


def _set_version(version: str):
    return lambda r: edit_json(r, "release.json", lambda m: m.__setitem__("version", version))


def _both(*fns):
    def fn(r: Path) -> None:
        for f in fns:
            f(r)

    return fn


VERSION_BREAKS = {
    "version-not-semver": (
        _set_version("v1.1.0"),
        "test_version_is_strict_semver",
        r"version: version 'v1.1.0' is not strict SemVer 2.0.0 \(leading 'v'\) \[release.json:version\]. "
        r"Fix: write \"1.1.0\"",
    ),
    "version-not-greater": (
        lambda r: None,
        "test_version_greater_than_baseline",
        r"version not greater than the baseline: 1.0.0, expected greater than 1.0.0 \(baseline baseline\) "
        r"\[release.json:version\]. Fix: in the release: `vla-release manifest . --version 1.0.1`",
    ),
    "weights-changed-patch-bump": (
        _both(_flip_one, _set_version("1.0.1")),
        "test_version_bump_covers_changes",
        r"weights changed, which requires a minor bump: 1 of \d+ tensors differ "
        r"\(model.layers.2.self_attn.o_proj.weight\); 1.0.0 -> 1.0.1 is a patch bump, expected at least a minor "
        r"bump \[model/model.safetensors:model.layers.2.self_attn.o_proj.weight\]. "
        r"Fix: in the release: `vla-release manifest . --version 1.1.0`",
    ),
    "architecture-changed-minor-bump": (
        _both(
            lambda r: edit_json(r, "model/config.json", lambda c: c.__setitem__("num_hidden_layers", 5)),
            _set_version("1.1.0"),
        ),
        "test_version_bump_covers_changes",
        r"architecture changed, which requires a major bump: config.json: num_hidden_layers 4 -> 5; 1.0.0 -> 1.1.0 "
        r"is a minor bump, expected at least a major bump \[model/config.json:num_hidden_layers\]. "
        r"Fix: in the release: `vla-release manifest . --version 2.0.0`",
    ),
    "tokenizer-changed-patch-bump": (
        _both(
            lambda r: edit_json(r, "model/tokenizer_config.json", lambda c: c.__setitem__("model_max_length", 128)),
            _set_version("1.0.1"),
        ),
        "test_version_bump_covers_changes",
        r"tokenizer changed, which requires a minor bump: tokenizer checksum sha256:\w+… -> sha256:\w+… "
        r"\(model/tokenizer_config.json\); 1.0.0 -> 1.0.1 is a patch bump.* \[model/tokenizer_config.json\]. "
        r"Fix: in the release: `vla-release manifest . --version 1.1.0`",
    ),
}


def _escaping_entry(release: Path) -> None:
    entry = {"size": 1, "sha256": "0" * 64}
    edit_json(release, "release.json", lambda m: m["files"].__setitem__("../outside.txt", entry))


def _symlink_out(release: Path) -> None:
    outside = release.parent / "outside.bin"
    outside.write_bytes(b"not part of the release")
    os.symlink(outside, release / "model/extra.bin")


MANIFEST_BREAKS = {
    "malformed-entry": (
        lambda r: edit_json(r, "release.json", lambda m: m["files"]["model/config.json"].__setitem__("sha256", "xyz")),
        "test_manifest_entries_well_formed",
        r"malformed manifest entry: sha256 'xyz', expected a byte count and 64 lower-case hex digits "
        r"\[release.json:files.model/config.json\]. Fix: regenerate it: in the release: `vla-release manifest .`",
    ),
    "listed-file-missing": (
        lambda r: (r / "docker/environment.json").unlink(),
        "test_no_listed_file_missing",
        r"listed file missing: not in the release, expected \d+ bytes, sha256 \w+… \[docker/environment.json\]. "
        r"Fix: restore the file",
    ),
    "unlisted-file": (
        write("notes.txt", "remember to tag the release\n"),
        "test_no_unlisted_file",
        r"file not in the manifest: present but not listed, expected every file listed with its size and sha256 "
        r"\[notes.txt\]. Fix: remove the file, or list it: in the release: `vla-release manifest .`",
    ),
    "listed-path-escapes": (
        _escaping_entry,
        "test_no_path_leaves_the_release",
        r"listed path leaves the release: '../outside.txt', expected a relative path inside the release "
        r"\[release.json:files.../outside.txt\]. Fix: list only files inside the release",
    ),
    "symlink-leaves": (
        _symlink_out,
        "test_no_path_leaves_the_release",
        r"symlink leaves the release: -> .*outside.bin, expected a regular file inside the release "
        r"\[model/extra.bin\]. Fix: replace the link with the file itself",
    ),
    "hash-mismatch": (
        lambda r: edit(r, "configs/vla-1b-dense.json", lambda t: t.replace('"cosine"', '"linear"')),
        "test_sizes_and_hashes_match",
        r"sha256 differs: sha256 \w{64}, expected \w{64} as listed \[configs/vla-1b-dense.json\]. "
        r"Fix: restore the released file, or if the change is intended: in the release: `vla-release manifest \.`"
        r".*\n\nfile +listed size +actual size +listed sha256 "
        r"+actual sha256\nconfigs/vla-1b-dense.json +\d+ +\d+ +\w{16} +\w{16}",
    ),
}


def _with_manifest(fn):
    """A break an attacker ships with a consistent release.json (so only the intended check sees it)."""

    def breaker(r: Path) -> None:
        from vla_reference.release import write_manifest

        fn(r)
        write_manifest(r)

    return breaker


MANIFEST_BREAKS |= {
    "remote-code": (
        _with_manifest(
            lambda r: edit_json(r, "model/config.json", lambda c: c.__setitem__("auto_map", {"AutoModel": "m.M"}))
        ),
        "test_no_code_in_the_release",
        r"the release needs remote code: auto_map \{'AutoModel': 'm.M'\}, expected no auto_map: stock transformers "
        r"classes \[model/config.json:auto_map\]. Fix: remove 'auto_map'",
    ),
    "code-file": (
        _with_manifest(write("model/modeling_vla.py", "import os\n")),
        "test_no_code_in_the_release",
        r"code in the model directory: modeling_vla.py \(.py file\), expected weights, configs and tokenizer files "
        r"only \[model/modeling_vla.py\]. Fix: remove it",
    ),
}


def test_removing_the_code_as_printed_makes_the_release_conform(golden_copy, run_suite):
    """VLA-MAN-007's fixes: remove 'auto_map', remove the file (then the manifest refreshed)."""
    from vla_reference.release import write_manifest

    release = golden_copy("dense")
    MANIFEST_BREAKS["remote-code"][0](release)
    MANIFEST_BREAKS["code-file"][0](release)
    broken = run_suite(release, "-m", "manifest", *FAST)
    assert list(broken.failed) == ["test_no_code_in_the_release"], broken.failed
    assert broken.failed["test_no_code_in_the_release"].count("Fix: remove") == 2
    edit_json(release, "model/config.json", lambda c: c.pop("auto_map"))
    (release / "model/modeling_vla.py").unlink()
    write_manifest(release)
    again = run_suite(release, "-m", "manifest", *FAST)
    assert not again.failed and "test_no_code_in_the_release" in again.passed, again.failed


TINY = "configs/vla-driver-tiny-dense.json"
SCRIPT = "scripts/run_pretrain.sh"
DOCKERFILE = "docker/Dockerfile"

REPRO_BREAKS = {
    "matrix-key-missing": (
        lambda r: edit_json(r, "configs/vla-1b-dense.json", lambda c: c.pop("lr-decay-style")),
        "test_config_matrix_complete",
        r"config lacks lr-decay-style: not set, expected lr-decay-style \(training\) "
        r"\[configs/vla-1b-dense.json:lr-decay-style\]. Fix: add \"lr-decay-style\"",
    ),
    "release-config-disagrees-with-config-json": (
        lambda r: edit_json(r, "model/config.json", lambda c: c.__setitem__("num_hidden_layers", 6)),
        "test_release_config_matches_model_config",
        r"num-layers differs: 4 in vla-driver-tiny-dense.json, expected 6 from config.json "
        rf"\[{TINY}:num-layers\]. Fix: set num-layers to 6",
    ),
    "release-config-disagrees-with-args": (
        lambda r: edit_json(r, TINY, lambda c: c.__setitem__("tensor-model-parallel-size", 4)),
        "test_release_config_matches_training_args",
        r"tensor-model-parallel-size differs: 4 in vla-driver-tiny-dense.json, expected 2 from the training args "
        r"\(checkpoint/iter_0001000/mp_rank_00_000/model_optim_rng.pt\) "
        rf"\[{TINY}:tensor-model-parallel-size\]. Fix: set tensor-model-parallel-size to 2, as the run was trained",
    ),
    "base-image-without-digest": (
        lambda r: edit(r, DOCKERFILE, lambda t: re.sub(r"@sha256:[0-9a-f]{64}", "", t)),
        "test_dockerfile_pinned",
        r"base image not pinned by tag and digest: FROM nvcr.io/nvidia/pytorch:24.03-py3 lacks a digest \(line 2\), "
        rf"expected FROM image:tag@sha256:<64 hex digits> \[{DOCKERFILE}:FROM\]. Fix: pin it",
    ),
    "pip-package-unpinned": (
        lambda r: edit(r, DOCKERFILE, lambda t: t.replace("transformers==5.23.0", "transformers>=5")),
        "test_dockerfile_pinned",
        r"pip package not pinned: 'transformers>=5' \(line 3\), expected transformers==<version> "
        rf"\[{DOCKERFILE}:transformers\]. Fix: pin it: transformers==",
    ),
    "launch-script-not-executable": (
        lambda r: (r / SCRIPT).chmod(0o644),
        "test_launch_script_runs",
        rf"launch script not executable: 0o644, expected mode with the executable bits \(0755\) \[{SCRIPT}\]. "
        r"Fix: chmod \+x run_pretrain.sh",
    ),
    "launch-script-syntax-error": (
        lambda r: edit(r, SCRIPT, lambda t: t.replace("set -euo pipefail", "set -euo pipefail\nif then fi")),
        "test_launch_script_runs",
        rf"launch script has a syntax error: line \d+: syntax error.* \[{SCRIPT}\]. Fix: fix the script",
    ),
    "launch-script-parallel-size-differs": (
        lambda r: edit(r, SCRIPT, replace("--tensor-model-parallel-size 2", "--tensor-model-parallel-size 4")),
        "test_launch_script_matches_training_args",
        r"--tensor-model-parallel-size differs: 4 \(line \d+\), expected 2 from the training args \(checkpoint/.*\) "
        rf"\[{SCRIPT}:--tensor-model-parallel-size\]. Fix: launch with --tensor-model-parallel-size 2",
    ),
    "environment-record-lacks-nccl": (
        lambda r: edit_json(r, "docker/environment.json", lambda e: e.pop("nccl")),
        "test_environment_record",
        r"environment record lacks the nccl version: not recorded, expected \"nccl\": \"<major.minor\[.patch\]>\" "
        r"\[docker/environment.json:nccl\]. Fix: record the nccl version",
    ),
}

AREAS = {
    "card": CARD_BREAKS,
    "versioning": VERSION_BREAKS,
    "manifest": MANIFEST_BREAKS,
    "reproducibility": REPRO_BREAKS,
}
CASES = [pytest.param(area, name, id=f"{area}:{name}") for area, breaks in AREAS.items() for name in breaks]


@pytest.mark.parametrize(("area", "name"), CASES)
def test_exactly_the_intended_check_fails(area, name, golden_copy, run_suite, tmp_path):
    breaker, test, message = AREAS[area][name]
    release = golden_copy("dense")
    args = ["-m", area, *FAST]
    if area == "versioning" and name != "version-not-semver":
        baseline = tmp_path / "baseline"
        shutil.copytree(GOLDEN / "dense", baseline)
        args.append(f"--vla-baseline={baseline}")
    breaker(release)
    run = run_suite(release, *args)
    assert list(run.failed) == [test], run.failed
    assert re.search(message, run.failed[test], re.S), run.failed[test]
    run.assert_reported(test)


@pytest.mark.parametrize("name", [n for n in VERSION_BREAKS if n != "version-not-semver"])
def test_the_printed_version_fix_makes_the_versioning_checks_pass(name, golden_copy, run_suite, tmp_path):
    """VLA-VER-002/003's fix, run as printed in the release, gives a version that covers the
    changes and states it in the card too: versioning, card and manifest then pass."""
    release = golden_copy("dense")
    baseline = tmp_path / "baseline"
    shutil.copytree(GOLDEN / "dense", baseline)
    breaker, test, _ = VERSION_BREAKS[name]
    breaker(release)
    run = run_suite(release, "-m", "versioning", f"--vla-baseline={baseline}", *FAST)
    run_printed_fix(run.failed[test], release)
    again = run_suite(release, "-m", "versioning or card or manifest", f"--vla-baseline={baseline}", *FAST)
    assert not again.failed, again.failed
    assert test in again.passed


def test_the_printed_card_version_fix_makes_the_card_agree(golden_copy, run_suite):
    """VLA-CARD-006's fix, run as printed, writes release.json's version wherever the card states
    one; the card and manifest checks then pass and the rest of the card is unchanged."""
    release = golden_copy("dense")
    breaker, test, _ = CARD_BREAKS["card-version-differs"]
    breaker(release)
    run = run_suite(release, "-m", "card", *FAST)
    assert run_printed_fix(run.failed[test], release) == "vla-release manifest . --version 1.0.0"
    again = run_suite(release, "-m", "card or manifest", *FAST)
    assert not again.failed and test in again.passed, again.failed
    assert (release / CARD).read_bytes() == (GOLDEN / "dense" / CARD).read_bytes()


@pytest.mark.parametrize("name", ["dense", "moe"])
def test_golden_releases_conform(name, run_suite):
    run = run_suite(GOLDEN / name, "-m", "card or versioning or manifest or reproducibility", *FAST)
    assert not run.failed, run.failed
    assert sorted(run.skipped) == ["test_version_bump_covers_changes", "test_version_greater_than_baseline"]
    assert len(run.passed) == 15 + 1 + 7 + 7  # card, versioning, manifest, reproducibility


def test_a_correct_bump_conforms(golden_copy, run_suite, tmp_path):
    """Weights changed and resharded, card edited, version bumped minor: every versioning check passes."""
    baseline = tmp_path / "baseline"
    shutil.copytree(GOLDEN / "dense", baseline)
    release = golden_copy("dense")
    _flip_one(release)
    edit(release, CARD, lambda t: t.replace("Its weights are\nrandom", "Its weights are\nentirely random"))
    _set_version("1.1.0")(release)
    run = run_suite(release, "-m", "versioning", f"--vla-baseline={baseline}", *FAST)
    assert not run.failed and sorted(run.passed) == [
        "test_version_bump_covers_changes",
        "test_version_greater_than_baseline",
        "test_version_is_strict_semver",
    ], (run.failed, run.skipped)


def test_resharding_alone_is_a_patch(golden_copy, run_suite, tmp_path):
    """The same tensors in other shard files are the same weights: a patch bump suffices."""
    from vla_reference.hf import HFSource, write_hf

    baseline = tmp_path / "baseline"
    shutil.copytree(GOLDEN / "dense", baseline)
    release = golden_copy("dense")
    model = release / "model"
    resharded = tmp_path / "resharded"
    write_hf(HFSource(model), resharded, max_shard_size=100_000, fsync=False)
    (model / "model.safetensors").unlink()
    for f in resharded.glob("model*"):
        shutil.move(str(f), model / f.name)
    assert len(list(model.glob("model-*.safetensors"))) > 1
    _set_version("1.0.1")(release)
    run = run_suite(release, "-m", "versioning", f"--vla-baseline={baseline}", *FAST)
    assert not run.failed, run.failed
    assert "test_version_bump_covers_changes" in run.passed


def test_ignored_paths_are_not_unlisted(golden_copy, run_suite):
    release = golden_copy("dense")
    write(".git/HEAD", "ref: refs/heads/main\n")(release)
    write("model/__pycache__/x.pyc", "")(release)
    write(".cache/huggingface/download/model.lock", "")(release)
    run = run_suite(release, "-m", "manifest", *FAST)
    assert not run.failed, run.failed


def test_inference_only_release_skips_what_needs_the_checkpoint(golden_copy, run_suite):
    release = golden_copy("dense")
    shutil.rmtree(release / "checkpoint")
    shutil.rmtree(release / "scripts")
    edit_json(release, "release.json", lambda m: m.pop("launch_script"))
    run = run_suite(release, "-m", "reproducibility", *FAST)
    assert not run.failed, run.failed
    assert set(run.skipped) == {
        "test_release_config_matches_training_args",
        "test_launch_script_runs",
        "test_launch_script_matches_training_args",
    }
    assert "no Megatron checkpoint" in run.skipped["test_release_config_matches_training_args"]


@pytest.mark.parametrize("how", ["deleted", "not-json"])
def test_unreadable_manifest_fails_one_check_in_the_whole_suite(how, golden_copy, run_suite):
    """One defect, one failure: the checks of every area that read release.json skip, naming the one that fails."""
    release = golden_copy("dense")
    manifest = release / "release.json"
    if how == "deleted":
        manifest.unlink()
    else:
        manifest.write_text(manifest.read_text()[:300])
    run = run_suite(release, *FAST)
    assert list(run.failed) == ["test_manifest_entries_well_formed"], sorted(run.failed)
    assert "release.json unreadable:" in run.failed["test_manifest_entries_well_formed"]
    assert "release.json" in run.failed["test_manifest_entries_well_formed"]
    for test in ("test_sizes_and_hashes_match", "test_checksum_matches_manifest", "test_version_is_strict_semver"):
        assert test in run.skipped, sorted(run.skipped)
