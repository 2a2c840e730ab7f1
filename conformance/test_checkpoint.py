"""Checkpoint conformance: the training checkpoint is complete, consistent, and is the shipped model."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pytest
import torch

from pytest_vla.cache import ArtefactCache
from pytest_vla.findings import Findings
from pytest_vla.fixtures import Checkpoint, open_checkpoint
from pytest_vla.results import measure
from pytest_vla.rules import rule
from vla_reference import merge, read_json
from vla_reference.converter import Layout, Split, compare_config, rule_for
from vla_reference.errors import ReleaseError
from vla_reference.hf import HFSource
from vla_reference.megatron import MegatronSource, args_disagreements, check_layout, write_megatron
from vla_reference.release import Release

pytestmark = pytest.mark.checkpoint

ROUND_TRIP_LAYOUTS: Final = ("shipped", "tp1-pp1", "wider-tp")


@rule(
    "VLA-CKPT-001",
    fix="copy the whole iteration directory (every mp_rank_* directory and its args), or re-save the checkpoint",
)
def test_checkpoint_layout(vla_release: Release, vla_checkpoint_dir: Path) -> None:
    """Every rank directory is present, each holds the parameters the recorded args call for."""
    findings = Findings("checkpoint layout", vla_release.root)
    try:
        open_checkpoint(vla_release, vla_checkpoint_dir, verify=False)
    except ReleaseError as e:
        findings.add_error(e, "checkpoint layout")
    findings.check()


@rule(
    "VLA-CKPT-002",
    fix="re-save the checkpoint from a consistent run: replicated parameters must be identical on every rank",
)
def test_replicated_tensors_identical(vla_release: Release, vla_checkpoint: Checkpoint) -> None:
    """Replicated parameters (norms, router, shared K/V, EP replicas, tied head) agree on every rank
    (torch_dist stores one copy: its pieces must cover each tensor exactly once)."""
    findings = Findings("replicated tensors", vla_release.root)
    for key in vla_checkpoint.keys():
        try:
            rows = vla_checkpoint.get(key)
        except ReleaseError as e:
            findings.add_error(e, "replicas differ")
        else:
            vla_checkpoint.release(rows)
    findings.check()


_INT: Final = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's elements as integers of their width: equal exactly when bit-identical (two
    identical NaNs are equal, 0.0 and -0.0 are not)."""
    return t.contiguous().view(_INT[t.element_size()])


def _compare_dirs(findings: Findings, merged: Path, shipped: Path, what: str) -> dict[str, float | str]:
    """Findings for every tensor that differs; returns each tensor's status: its max |Δ| (0.0 when
    bit-identical), or ``missing``, ``extra``, ``dtype/shape``."""
    a, b = HFSource(merged), HFSource(shipped, check_shapes=False)  # shapes are compared below, with the fix
    names_a, names_b = set(a._where), set(b._where)
    status: dict[str, float | str] = dict.fromkeys(names_b - names_a, "extra")
    status |= dict.fromkeys(names_a - names_b, "missing")
    for name in sorted(names_b - names_a):
        findings.add(
            what,
            "tensor not produced by merging the checkpoint",
            file=b._where[name].path,
            key=name,
            fix="ship only tensors that come from the training checkpoint",
        )
    for name in sorted(names_a - names_b):
        findings.add(
            what,
            "tensor missing from the shipped model",
            file=shipped / "model.safetensors",
            key=name,
            fix="in the release: `vla-release remerge .` (merges checkpoint/ into model/ as pack does)",
        )
    for name in sorted(names_a & names_b):
        x, y = a.hf_tensor(name), b.hf_tensor(name)
        _compare_one(findings, what, name, x, y, b._where[name].path, status)
        a.pages.release(x)  # both are mapped files: their pages are read again if needed, not held
        b.pages.release(y)
    a.pages.flush()
    b.pages.flush()
    return dict(sorted(status.items()))


def _compare_one(
    findings: Findings, what: str, name: str, x: torch.Tensor, y: torch.Tensor, file: Path, status: dict
) -> None:
    """A finding when the merged tensor ``x`` and the shipped ``y`` are not bit-identical; records
    the tensor's status in ``status``."""
    status[name] = 0.0
    if x.dtype != y.dtype or x.shape != y.shape:
        status[name] = "dtype/shape"
        findings.add(
            what,
            f"{tuple(y.shape)} {y.dtype}",
            f"{tuple(x.shape)} {x.dtype} (merged)",
            file=file,
            key=name,
            fix="in the release: `vla-release remerge .` (merges checkpoint/ into model/ as pack does)",
        )
    elif not torch.equal(_bits(x), _bits(y)):
        differs = _bits(x) != _bits(y)
        # a NaN or inf on either side is an infinite difference (NaN compares unequal to all)
        diff = torch.nan_to_num((x.float() - y.float()).abs(), nan=float("inf"))
        diff = torch.where(differs, diff.clamp_min(torch.finfo(torch.float32).tiny), 0.0)
        status[name] = float(diff.max())
        where = tuple(int(i) for i in torch.nonzero(diff == diff.max())[0])
        nonfinite = int((~torch.isfinite(y.float())).sum())
        findings.add(
            what,
            f"{int(differs.sum())} of {x.numel()} elements differ (max abs diff {diff.max().item():.4g} at {where})"
            + (f"; {nonfinite} not finite in the shipped tensor" if nonfinite else ""),
            "bit-identical to the merged checkpoint",
            file=file,
            key=name,
            fix="in the release: `vla-release remerge .` (merges checkpoint/ into model/ as pack does)",
        )


@rule(
    "VLA-CKPT-003",
    fix="ship what merging the checkpoint gives: in the release, `vla-release remerge .` (keeps the tokenizer, "
    "processor and card; adds the IDs and norm_stats a bare merge cannot know)",
)
def test_merge_equals_shipped_model(
    vla_release: Release, vla_merged_checkpoint: Path, vla_model_dir: Path, request: pytest.FixtureRequest
) -> None:
    """Merging the training checkpoint gives exactly the shipped weights: keys, dtypes, shapes, bytes."""
    findings = Findings("merged checkpoint vs shipped model", vla_release.root)
    try:
        status = _compare_dirs(findings, vla_merged_checkpoint, vla_model_dir, "shipped tensor differs")
        measure(request.node, "round_trip", {"merged vs shipped": status})
    except ReleaseError as e:
        findings.add_error(e, "shipped model unreadable")
    findings.check()


def _target_layout(name: str, src: Checkpoint) -> Layout | None:
    shipped = src.layout
    if name == "shipped":
        return Layout(tp=shipped.tp, pp=shipped.pp, ep=shipped.ep)
    if name == "tp1-pp1":
        return Layout()
    for tp in (shipped.tp * 2, shipped.tp * 4, 8, 4, 2):
        if tp <= shipped.tp:
            continue
        layout = Layout(tp=tp, pp=shipped.pp, ep=shipped.ep)
        try:
            check_layout(src.arch, layout)
        except ReleaseError:
            continue
        return layout
    return None


def _rank_tensors(src: MegatronSource, findings: Findings, other: MegatronSource, label: str) -> None:
    """Compare two checkpoints rank by rank: the split layout of every split parameter.

    Padding rows beyond the true vocabulary, replicated parameters and expert-parallel replicas
    of non-expert parameters are left to test_replicated_tensors_identical.
    """
    vocab = src.arch.vocab_size
    for key in src.keys():
        rule, _, expert = rule_for(key)
        if rule.split is Split.REPLICATED:
            continue
        mine = {(p.tp, p.pp, p.ep): p for p in src._index[key] if expert is not None or p.ep == 0}
        theirs = {(p.tp, p.pp, p.ep): p for p in other._index[key]}
        for rank, piece in sorted(mine.items()):
            twin = theirs.get(rank)
            a, b = piece.tensor, None if twin is None else twin.tensor
            if b is not None and rule.split is Split.VOCAB and vocab is not None:
                keep = max(min(vocab - rank[0] * a.shape[0], a.shape[0]), 0)
                a, b = a[:keep], b[:keep]
            if b is None or a.dtype != b.dtype or a.shape != b.shape or not torch.equal(a, b):
                findings.add(
                    label,
                    "rank tensor differs after merge -> reshard",
                    "bit-identical",
                    file=piece.file,
                    key=piece.local_key,
                    fix="the checkpoint is not in the canonical layout the args describe; re-save it",
                )
            src.pages.release(piece.tensor)  # mapped rank files: read again if needed, not held
            if twin is not None:
                other.pages.release(twin.tensor)
    src.pages.flush()
    other.pages.flush()


@rule(
    "VLA-CKPT-004",
    fix=(
        "the checkpoint's split is inconsistent at another layout: re-save it, or report the converter bug "
        "with the layout named"
    ),
)
@pytest.mark.parametrize("target", ROUND_TRIP_LAYOUTS)
def test_reshard_round_trip(
    target: str,
    vla_release: Release,
    vla_checkpoint: Checkpoint,
    vla_checkpoint_dir: Path,
    vla_merged_checkpoint: Path,
    vla_artefacts: ArtefactCache,
    request: pytest.FixtureRequest,
) -> None:
    """Resharding the merged checkpoint and merging it again is bit-exact, at several layouts."""
    layout = _target_layout(target, vla_checkpoint)
    if layout is None:
        # Why skip: no wider TP divides this model's heads/groups/ffn, so there is no layout to test at
        # (both golden releases do have one; the wider-TP round trip runs there).
        pytest.skip(f"no valid tensor-parallel size wider than {vla_checkpoint.layout.tp} for this model")
    findings = Findings(f"reshard round trip at {layout.describe()}", vla_release.root)
    key = vla_artefacts.digest(vla_merged_checkpoint)
    name = f"reshard-tp{layout.tp}-pp{layout.pp}-ep{layout.ep}"
    resharded = vla_artefacts.build(
        key, name, lambda dst: write_megatron(HFSource(vla_merged_checkpoint), dst, layout, fsync=False)
    )
    back = vla_artefacts.build(key, name + "-merged", lambda dst: merge(resharded, dst, fsync=False))
    status = _compare_dirs(findings, back, vla_merged_checkpoint, f"round trip at {layout.describe()}")
    measure(request.node, "round_trip", {layout.describe(): status})
    if target == "shipped" and isinstance(vla_checkpoint, MegatronSource):
        # rank by rank; a torch_dist checkpoint is layout-free, it has no rank tensors to compare
        _rank_tensors(vla_checkpoint, findings, MegatronSource.open(resharded), "rank tensors")
    findings.check()


@rule(
    "VLA-CKPT-005", fix="make model/config.json describe the trained model (re-run merge), or correct the recorded args"
)
def test_config_agrees_with_args(vla_release: Release, vla_model_dir: Path, vla_checkpoint: Checkpoint) -> None:
    """config.json describes the model the training arguments describe."""
    findings = Findings("config.json vs training args", vla_release.root)
    cfg_path = vla_model_dir / "config.json"
    try:
        config = read_json(cfg_path)
        diffs = compare_config(config, vla_checkpoint.arch, source=cfg_path)
    except ReleaseError as e:
        findings.add_error(e, "config.json")
        diffs = []
    for field, cfg_key, in_config, in_args in diffs:
        findings.add(
            f"{field} differs",
            f"config.json says {in_config!r}",
            f"{in_args!r} from the training args",
            file=cfg_path,
            key=cfg_key,
            fix=f"regenerate config.json from the checkpoint (`vla-release merge`) or correct {cfg_key}",
        )
    findings.check()


def _in_release(release: Release, path: Path) -> str:
    try:
        return path.resolve().relative_to(release.root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


@rule(
    "VLA-CKPT-006",
    fix="write arguments.json from the rank files' args: "
    "`vla-release inspect checkpoint --args > checkpoint/iter_<N>/arguments.json`, then `vla-release manifest .`",
)
def test_arguments_json_agrees_with_rank_args(vla_release: Release, vla_checkpoint: Checkpoint) -> None:
    """arguments.json beside the shards, where the rank files also record the args, is a JSON
    object recording the same hyperparameters (tools that read only arguments.json build that model)."""
    path = vla_checkpoint.ckpt.arguments_json
    if path is None:
        # Why skip: arguments.json is optional (Megatron records the args in every rank file); with
        # none there is no second record to disagree with the first.
        pytest.skip("no arguments.json in the checkpoint (optional: the rank files record the args)")
    if vla_checkpoint.args_file == path:
        # Why skip: the rank files' args were unusable, so arguments.json is the only record: there
        # is nothing to compare, and test_checkpoint_layout fails if it is malformed (one defect, one failure).
        pytest.skip("the args come from arguments.json alone (test_checkpoint_layout reads it)")
    rel, checkpoint = (_in_release(vla_release, p) for p in (path, vla_checkpoint.ckpt.root))
    fix = f"in the release: `vla-release inspect {checkpoint} --args > {rel} && vla-release manifest .`"
    findings = Findings("arguments.json vs the rank files' args", vla_release.root)
    try:
        recorded = read_json(path)
        if not isinstance(recorded, dict):
            findings.add(
                "arguments.json is not an object", type(recorded).__name__, "a JSON object", file=path, fix=fix
            )
            recorded = None
    except ReleaseError as e:
        findings.add("arguments.json unreadable", e.detail, "a JSON object of the training args", file=path, fix=fix)
        recorded = None
    if recorded is not None:
        for name, in_rank, in_json in args_disagreements(vla_checkpoint.args, recorded):
            findings.add(
                f"{name} differs" if in_json is not None else f"arguments.json lacks {name}",
                "not recorded" if in_json is None else repr(in_json),
                f"{in_rank!r} as the rank files record it ({vla_checkpoint.args_file.name})",
                file=path,
                key=name,
                fix=fix,
            )
    findings.check()
