"""Preprocessing conformance: the reference VLAProcessor, configured from the release, reproduces the
recorded outputs on the golden inputs, and the configuration itself is sane."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Final

import pytest
import torch

from pytest_vla.findings import Finding, Findings, FindingsFailed, fail
from pytest_vla.results import measure
from pytest_vla.rules import rule
from pytest_vla.snapshots import extension_for, skip_while_updating
from vla_reference import inside, read_json
from vla_reference.errors import MalformedFileError, ReleaseError
from vla_reference.preprocessing import (
    CASES,
    SNAPSHOT_DIR,
    case_items,
    compare,
    load_snapshot,
    parse,
    record,
    serialize,
    snapshot_file,
    snapshot_images,
)
from vla_reference.release import Bump, Release, bump_between, next_version, parse_version, required_for, sha256_file

pytestmark = pytest.mark.preprocessing

PROCESSOR_CONFIG: Final = "processor_config.json"
# (mean, std) of the conventions people mean when they say "normalised"
CONVENTIONS: Final[dict[str, tuple[tuple[float, ...], tuple[float, ...]]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "half (siglip, [-1, 1])": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "none ([0, 1])": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}
MODALITY_OF_TYPE: Final = {1: "image", 2: "video", 3: "audio", 4: "action", 5: "script", 6: "ipa"}


def _need_processor_config(model_dir: Path) -> Path:
    path = model_dir / PROCESSOR_CONFIG
    if not path.is_file():
        # Why skip: a text-only release ships no processor config (docs/release-format.md, parts table).
        pytest.skip(f"no processor config at {path}")
    return path


def _read_object(path: Path) -> dict[str, Any]:
    """A JSON file holding an object; MalformedFileError naming it otherwise."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise MalformedFileError(f"holds a JSON {type(data).__name__}, not an object", path=path)
    return data


def _processor_config(model_dir: Path) -> dict[str, Any]:
    """processor_config.json parsed, for the checks that read it; they skip when it is unreadable."""
    try:
        return _read_object(_need_processor_config(model_dir))
    except ReleaseError as e:
        # Why skip: test_processor_loads fails on the unreadable file, naming it; one defect, one failure.
        pytest.skip(f"processor_config.json is unreadable (reported by test_processor_loads): {e}")


def _load(model_dir: Path) -> Any:
    from transformers import AutoProcessor

    import vla_reference.processor  # noqa: F401 - registers the classes with transformers
    from vla_reference.tokenizer import probe_tokenizer

    loaded = AutoProcessor.from_pretrained(model_dir, trust_remote_code=False)
    backend = getattr(getattr(loaded, "tokenizer", None), "backend_tokenizer", None)
    if backend is not None:  # a tokenizer.json that makes tokenizers panic is refused here, naming it
        probe_tokenizer(backend, model_dir / "tokenizer.json")
    return loaded


@pytest.fixture(scope="module")
def processor(vla_model_dir: Path) -> Any:
    """The reference processor configured from the release; skips if it cannot load (see test_processor_loads)."""
    _need_processor_config(vla_model_dir)
    try:
        return _load(vla_model_dir)
    except Exception as e:  # noqa: BLE001 - reported with its key by test_processor_loads
        # Why skip: the load error fails test_processor_loads with its key; one defect, one failure.
        pytest.skip(f"the processor does not load (reported by test_processor_loads): {e}")


@rule("VLA-PRE-001", fix="fix the processor_config.json key the message names")
def test_processor_loads(vla_release: Release, vla_model_dir: Path) -> None:
    """AutoProcessor.from_pretrained(model/) gives the reference VLAProcessor; every config key is valid."""
    from vla_reference.processor import CodebookError

    findings = Findings("processor config", vla_release.root)
    try:
        config = _read_object(_need_processor_config(vla_model_dir))
    except ReleaseError as e:
        findings.fail_on(e, "processor config unreadable")
    try:
        _load(vla_model_dir)
    except CodebookError as e:
        if _codebook_problems(vla_model_dir, config, Findings("", vla_release.root)).items:
            # Why skip: test_codebooks_match_their_sha256 fails on this, naming the file and digest.
            pytest.skip(f"a codebook does not match its SHA-256 (reported by test_codebooks_match_their_sha256): {e}")
        findings.add_error(e, "processor config invalid")
    except ReleaseError as e:
        if e.path is None:  # the config reader names the key; the file is the processor config
            e.path = vla_model_dir / "processor_config.json"
        findings.add_error(e, "processor config invalid")
    except Exception as e:  # noqa: BLE001 - transformers' own parsing of model/ (config.json...) failed
        findings.add(
            "AutoProcessor cannot load the model directory",
            f"{type(e).__name__}: {e}",
            file=vla_model_dir,
            fix="every JSON file in model/ must parse",
        )
    findings.check()


@rule(
    "VLA-PRE-002",
    fix=(
        "restore the preprocessing that recorded the snapshot, or re-record under a new version with "
        "`vla-release snapshots RELEASE --version X` (or pytest --snapshot-update after the bump)"
    ),
)
@pytest.mark.parametrize("case", CASES)
def test_matches_snapshot(
    case: str,
    processor: Any,
    vla_release: Release,
    vla_model_dir: Path,
    snapshot: Any,
    request: pytest.FixtureRequest,
) -> None:
    """The outputs on a golden input equal the snapshot recorded for this release version."""
    config = _processor_config(vla_model_dir)
    data = record(processor, case, version=vla_release.version, processor_config=config)
    recorded = snapshot_file(vla_release.root, case)
    rel = recorded.relative_to(vla_release.root)
    updating = request.config.option.update_snapshots
    if recorded.is_file():
        try:
            text, header, _ = load_snapshot(recorded)
        except ReleaseError as e:
            Findings("preprocessing snapshot", vla_release.root).fail_on(e, "snapshot unreadable")
        received = serialize(data)
        differences = compare(received, text)
        if differences:
            measure(request.node, "snapshot_differences", differences)
            images = snapshot_images(received, text)
            if images:
                measure(request.node, "snapshot_images", images)
        if differences and not updating:
            fix = (
                "restore the processor config and codebooks training used; if the change is intended: in the "
                f"release: `{_rerecord_command(vla_release.version, header.get('release_version'))}`"
            )
            raise FindingsFailed(
                f"preprocessing of {case} differs from the snapshot recorded for v{header.get('release_version')} "
                f"[{rel}]:\n" + "\n".join(f"  - {d}" for d in differences) + f"\nFix: {fix}",
                [Finding("preprocessing differs from the snapshot", d, None, recorded, case, fix) for d in differences],
                vla_release.root,
            )
        if header.get("release_version") == vla_release.version and differences:
            fail(
                f"refusing to re-record {recorded.name} under the unchanged version {vla_release.version}",
                f"preprocessing changed ({'; '.join(differences[:4])})",
                file=vla_release.root / "release.json",
                key="version",
                fix="any preprocessing change is a new release: in the release: "
                f"`{_rerecord_command(vla_release.version, header.get('release_version'))}`",
                root=vla_release.root,
            )
    elif not updating:
        fail(
            f"no snapshot recorded for {case}",
            "absent",
            file=recorded,
            fix="record the release's snapshots: in the release: `vla-release snapshots .`",
            root=vla_release.root,
        )
    assert data == snapshot(extension_class=extension_for(vla_release.root / SNAPSHOT_DIR))


def _rerecord_command(version: str, recorded: Any) -> str:
    """The command that re-records the snapshots: under the next minor version when the release
    still has the version they were recorded for (a preprocessing change is a new release)."""
    if recorded != version:
        return "vla-release snapshots ."
    try:
        return f"vla-release snapshots . --version {next_version(parse_version(version), Bump.MINOR)}"
    except (ReleaseError, ValueError):
        return "vla-release snapshots . --version X.Y.Z"


def _preprocessing_bump(release: Release, baseline: Release) -> tuple[bool, str]:
    """Whether the version over the baseline covers a preprocessing change (docs/metadata.md: at
    least minor), and the version that would."""
    try:
        old, new = parse_version(baseline.manifest.get("version")), parse_version(release.manifest.get("version"))
    except (ReleaseError, ValueError):
        return False, "a MAJOR.MINOR.PATCH above the baseline's, with at least a minor bump"
    need = required_for(old, Bump.MINOR)
    return bump_between(old, new) >= need, str(next_version(old, need))


@rule(
    "VLA-PRE-003",
    fix=(
        "the fine-tune preprocesses differently from its base: restore the base's processor config, or bump the "
        "version as a preprocessing change requires (at least minor)"
    ),
)
def test_reproduces_baseline_snapshots(
    request: pytest.FixtureRequest, vla_release: Release, vla_baseline: Release, processor: Any, vla_model_dir: Path
) -> None:
    """A fine-tune preprocesses exactly as its base release recorded (every case, bit for bit),
    unless its version bump over the base covers a preprocessing change (at least minor,
    docs/metadata.md). Either way the cases that differ are counted in the report
    (``changed_cases``, of ``compared_cases``)."""
    findings = Findings("preprocessing vs the baseline's snapshots", vla_release.root)
    covered, least = _preprocessing_bump(vla_release, vla_baseline)
    config = _processor_config(vla_model_dir)
    changed, compared = [], 0
    for case in CASES:
        base = snapshot_file(vla_baseline.root, case)
        if not base.is_file():
            if not covered:  # with a covering bump there is nothing the fine-tune must reproduce
                findings.add(
                    "baseline snapshot missing",
                    "absent",
                    file=base,
                    key=case,
                    fix="record the baseline's snapshots (pytest --vla-release=BASE --snapshot-update)",
                )
            continue
        try:
            text, _, want = load_snapshot(base)
        except ReleaseError as e:
            if not covered:
                findings.add_error(e, "baseline snapshot unreadable")
            continue
        compared += 1
        ours = serialize(record(processor, case, version=vla_release.version, processor_config=config))
        _, got = parse(ours)
        if got != want:
            changed.append(case)
            if covered:
                continue
            detail = "; ".join(compare(ours, text)[:4]) or "bytes differ within tolerance"
            findings.add(
                "preprocessing differs from the base release",
                detail,
                "identical outputs",
                file=base,
                key=case,
                fix=f"restore the base's processor config and codebooks, or in the release: "
                f"`vla-release manifest . --version {least}` (a preprocessing change needs a minor bump)",
            )
    measure(request.node, "compared_cases", compared)
    measure(request.node, "changed_cases", len(changed))
    if covered and changed:
        measure(request.node, "changed_cases_covered_by", f"version {vla_release.version} over {vla_baseline.version}")
    findings.check()


@rule(
    "VLA-PRE-004",
    fix="re-save the processor as save_pretrained(from_pretrained(model/)) writes it: in the release: "
    "`vla-release snapshots . --resave-processor`",
)
def test_config_round_trips(vla_release: Release, processor: Any, vla_model_dir: Path) -> None:
    """save_pretrained(from_pretrained(model/)) writes the processor files byte for byte."""
    findings = Findings("processor save/load round trip", vla_release.root)
    with tempfile.TemporaryDirectory() as out:
        processor.save_pretrained(out)
        for name in sorted(p.name for p in Path(out).iterdir()):
            shipped = vla_model_dir / name
            if name.startswith(("tokenizer", "special_tokens", "added_tokens", "vocab", "merges")):
                continue  # the tokenizer package is the tokenizer area's
            if not shipped.is_file():
                findings.add("file not shipped", "absent", file=shipped, fix="ship what save_pretrained writes")
            elif shipped.read_bytes() != (Path(out) / name).read_bytes():
                findings.add(
                    "re-saved file differs",
                    "bytes differ",
                    "identical",
                    file=shipped,
                    fix="in the release: `vla-release snapshots . --resave-processor` (rewrites the processor "
                    "files as save_pretrained does)",
                )
    findings.check()


@rule("VLA-PRE-005", fix="after a deliberate processor change: in the release: `vla-release manifest .`")
def test_config_hash_matches_manifest(
    vla_release: Release, vla_model_dir: Path, vla_manifest: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    """processor_config.json is the file release.json recorded."""
    skip_while_updating(request.config)
    _need_processor_config(vla_model_dir)
    rel = f"model/{PROCESSOR_CONFIG}"
    findings = Findings("processor config vs release.json", vla_release.root)
    files = vla_manifest.get("files")
    entry = files.get(rel) if isinstance(files, dict) else None
    actual = sha256_file(vla_model_dir / PROCESSOR_CONFIG)
    if entry is None:
        findings.add(
            "not in the manifest",
            "unlisted",
            file="release.json",
            key=f"files.{rel}",
            fix="run `vla-release manifest` on the release",
        )
    elif entry.get("sha256") != actual:
        findings.add(
            "edited after the manifest was written",
            actual[:16],
            str(entry.get("sha256"))[:16],
            file="release.json",
            key=f"files.{rel}.sha256",
            fix="a processor change is a new release: bump the version, re-record, run `vla-release manifest`",
        )
    findings.check()


@rule(
    "VLA-PRE-006",
    fix="use the mean/std the model was trained with (ImageNet, CLIP, SigLIP...) and rescale uint8 by 1/255",
)
@pytest.mark.parametrize("section", ["image_processor", "video_processor"])
def test_normalization_is_a_named_convention(section: str, vla_release: Release, vla_model_dir: Path) -> None:
    """mean/std are one of the conventions a model is trained with, and uint8 input is rescaled by 1/255."""
    cfg = _processor_config(vla_model_dir).get(section)
    if cfg is None:
        # Why skip: a release without this modality has no such section; nothing to normalise.
        pytest.skip(f"no {section} in {PROCESSOR_CONFIG}")
    findings = Findings(f"{section} normalisation", vla_release.root)
    file = vla_model_dir / PROCESSOR_CONFIG
    if cfg.get("do_normalize"):
        mean, std = tuple(cfg.get("image_mean", ())), tuple(cfg.get("image_std", ()))
        named = [
            n
            for n, (m, s) in CONVENTIONS.items()
            if len(m) == len(mean) and all(abs(a - b) < 1e-6 for a, b in zip(m + s, mean + std, strict=True))
        ]
        if not named:
            findings.add(
                "mean/std match no named convention",
                f"mean {list(mean)}, std {list(std)}",
                " or ".join(CONVENTIONS),
                file=file,
                key=f"{section}.image_mean",
                fix="use the exact values of the convention the model was trained with",
            )
    if cfg.get("do_rescale") and abs(float(cfg.get("rescale_factor", 0)) - 1 / 255) > 1e-12:
        findings.add(
            "uint8 input is not rescaled to [0, 1]",
            cfg.get("rescale_factor"),
            1 / 255,
            file=file,
            key=f"{section}.rescale_factor",
            fix="rescale_factor must be 1/255 for 8-bit images",
        )
    findings.check()


@rule("VLA-PRE-007", fix="ship the codebook the model was trained with, or pin its SHA-256 in the config")
def test_codebooks_match_their_sha256(vla_release: Release, vla_model_dir: Path) -> None:
    """Every codebook the config names is shipped with the SHA-256 the config pins."""
    config = _processor_config(vla_model_dir)
    findings = Findings("codebooks", vla_release.root)
    _codebook_problems(vla_model_dir, config, findings).check()


def _codebook_problems(vla_model_dir: Path, config: dict[str, Any], findings: Findings) -> Findings:
    pins = [
        ("image_processor", "codebook_file", "codebook_sha256"),
        ("video_processor", "codebook_file", "codebook_sha256"),
        ("feature_extractor", "audio_codebook_file", "audio_codebook_sha256"),
    ]
    for section, file_key, hash_key in pins:
        cfg = config.get(section) or {}
        if not cfg.get(file_key):
            continue
        path = inside(vla_model_dir, cfg[file_key])
        if path is None:
            findings.add(
                "codebook named outside the model directory",
                repr(cfg[file_key]),
                "a file name in model/",
                file=vla_model_dir / "processor_config.json",
                key=f"{section}.{file_key}",
                fix="ship the codebook in model/ and name it by its file name",
            )
        elif not path.is_file():
            findings.add("codebook missing", "absent", file=path, key=f"{section}.{file_key}", fix="ship the codebook")
        elif sha256_file(path) != cfg.get(hash_key):
            findings.add(
                "codebook edited",
                sha256_file(path)[:16],
                str(cfg.get(hash_key))[:16],
                file=path,
                key=f"{section}.{hash_key}",
                fix="ship the codebook the model was trained with (its hash is pinned in the config)",
            )
    return findings


def _runs(ids: list[int], start: int, end: int) -> list[list[int]]:
    """The id runs between each ``start`` and its ``end`` delimiter."""
    out: list[list[int]] = []
    inside: list[int] | None = None
    for i in ids:
        if i == start:
            inside = []
        elif i == end and inside is not None:
            out.append(inside)
            inside = None
        elif inside is not None:
            inside.append(i)
    return out


@rule("VLA-PRE-008", fix="make the processor emit the documented token layout (docs/processor.md)")
def test_token_layout_follows_the_formula(vla_release: Release, processor: Any) -> None:
    """Delimiters, row separators and code counts in input_ids agree with the documented layout and
    with what _get_num_multimodal_tokens predicts from sizes alone."""
    findings = Findings("token layout", vla_release.root)
    roles = processor.token_map.roles
    for case in CASES:
        items = case_items(case)
        ids = processor(items, return_tensors="pt")["input_ids"][0].tolist()
        images = [it for it in items if hasattr(it, "size") and not hasattr(it, "frames")]
        if images:
            predicted = processor._get_num_multimodal_tokens(image_sizes=[im.size[::-1] for im in images])
            runs = _runs(ids, roles["image_start"], roles["image_end"])
            got = [len(r) + 2 for r in runs]
            if got != list(predicted.num_image_tokens):
                findings.add(
                    "image token count",
                    got,
                    list(predicted.num_image_tokens),
                    key=case,
                    fix="the image body must be rows x (cols + 1) codes with row separators",
                )
            rows = [r.count(roles["row_sep"]) for r in runs]
            want_rows = processor.image_processor.size["height"] // processor.image_processor.patch_size
            if processor.vla.image_token_mode == "vq" and any(n != want_rows for n in rows):
                findings.add("row separators", rows, want_rows, key=case, fix="one row separator ends each row")
        for it in items:
            if hasattr(it, "frames"):
                predicted = processor._get_num_multimodal_tokens(video_sizes=[(len(it.frames), it.fps)])
                runs = _runs(ids, roles["video_start"], roles["video_end"])
                if [len(r) + 2 for r in runs] != list(predicted.num_video_tokens):
                    findings.add(
                        "video token count",
                        [len(r) + 2 for r in runs],
                        list(predicted.num_video_tokens),
                        key=case,
                        fix="one camera and one timestamp token per temporal group",
                    )
            if hasattr(it, "samples"):
                predicted = processor._get_num_multimodal_tokens(audio_lengths=[(len(it.samples), it.sampling_rate)])
                runs = _runs(ids, roles["audio_start"], roles["audio_end"])
                if [len(r) + 2 for r in runs] != list(predicted.num_audio_tokens):
                    findings.add(
                        "audio token count",
                        [len(r) + 2 for r in runs],
                        list(predicted.num_audio_tokens),
                        key=case,
                        fix="n_q codes per audio frame",
                    )
    findings.check()


@rule("VLA-PRE-009", fix="keep each modality's ids inside its declared range in the config")
def test_modality_ids_in_declared_ranges(vla_release: Release, processor: Any) -> None:
    """Every id a modality emits lies in that modality's declared set; text never emits a VLA token."""
    findings = Findings("token ranges", vla_release.root)
    added = processor.token_map.added
    for case in CASES:
        batch = processor(case_items(case), return_tensors="pt", return_mm_token_type_ids=True)
        ids, types = batch["input_ids"][0].tolist(), batch["mm_token_type_ids"][0].tolist()
        mask = batch["attention_mask"][0].tolist()
        for pos, (i, t, m) in enumerate(zip(ids, types, mask, strict=True)):
            if not m:
                continue
            if t in MODALITY_OF_TYPE:
                name = MODALITY_OF_TYPE[t]
                allowed = processor.token_map.modality_ids(name)
                if i not in allowed and not (name == "script" and i not in added):
                    findings.add(
                        f"{name} id outside its range",
                        i,
                        "an id of that modality",
                        key=f"{case}[{pos}]",
                        fix="code ids are offset + code; check the *_token_offset keys",
                    )
            elif t == 0 and i in added and i != processor.token_map.bos:
                findings.add(
                    "text produced a VLA token",
                    i,
                    "a text id",
                    key=f"{case}[{pos}]",
                    fix="control tokens must come from items, not text",
                )
    findings.check()


@rule("VLA-PRE-010", fix="copy the processor's action statistics into config.json (norm_stats)")
def test_action_stats_agree(vla_release: Release, processor: Any, vla_model_dir: Path) -> None:
    """The action normalisation statistics mirrored in config.json equal the processor's."""
    from vla_reference.processor import norm_stats_mismatches

    findings = Findings("action statistics", vla_release.root)
    try:
        config = _read_object(vla_model_dir / "config.json")
    except ReleaseError as e:
        findings.fail_on(e, "config.json unreadable")
    if "norm_stats" not in config and not processor.vla.actions.to_json().get("norm_stats"):
        # Why skip: action statistics exist only for action-producing models; none are declared here.
        pytest.skip("no action statistics in either config")
    for problem in norm_stats_mismatches(config, processor):
        findings.add(
            "config.json and the processor disagree",
            problem,
            file=vla_model_dir / "config.json",
            key="norm_stats",
            fix="mirror processor_config.json's actions.norm_stats into config.json exactly",
        )
    findings.check()


@rule("VLA-PRE-011", fix="remove batch- or call-dependent state from the processor")
def test_deterministic_across_batches_and_calls(vla_release: Release, processor: Any) -> None:
    """Each case gives the same ids alone, inside a batch of all cases, and on a repeated call."""
    findings = Findings("determinism", vla_release.root)
    alone = [processor(case_items(c), return_tensors="pt", padding=False)["input_ids"][0] for c in CASES]
    again = [processor(case_items(c), return_tensors="pt", padding=False)["input_ids"][0] for c in CASES]
    batch = processor([case_items(c) for c in CASES], return_tensors="pt", padding=True)
    for n, case in enumerate(CASES):
        length = int(batch["attention_mask"][n].sum())
        row = batch["input_ids"][n]
        ids = row[:length] if processor.padding_side == "right" else row[-length:]
        if not torch.equal(alone[n], again[n]):
            findings.add("repeated call differs", case, key=case, fix="preprocessing must be deterministic")
        if not torch.equal(alone[n], ids):
            findings.add("batch of N differs from batch of 1", case, key=case, fix="padding must not change tokens")
    findings.check()
