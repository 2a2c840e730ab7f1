"""Parity: the sharded Megatron model and the merged checkpoint compute the same logits."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import pytest
import torch

from pytest_vla.cache import ArtefactCache
from pytest_vla.findings import Findings, FindingsFailed, fail
from pytest_vla.fixtures import Checkpoint
from pytest_vla.results import measure
from pytest_vla.rules import rule
from pytest_vla.session import VLASession
from vla_reference import atomic_write_bytes, read_json
from vla_reference.converter import Layout
from vla_reference.errors import ReleaseError
from vla_reference.findings import Finding
from vla_reference.hf import HFSource, SafetensorsFile, float32_bytes, streamed_model
from vla_reference.megatron import MegatronSource, check_layout, write_megatron
from vla_reference.parity import ParityStats, Tolerance, compare_logits, default_tolerance, format_table, sharded_logits
from vla_reference.release import Release

pytestmark = pytest.mark.parity

LAYOUTS: Final = ("shipped-layout", "alt-layout")


@pytest.fixture(scope="module")
def eval_set(vla_release: Release) -> list[tuple[str, list[int]]]:
    path = vla_release.root / "golden" / "eval_set.json"
    if not path.is_file():
        # Why skip: golden/eval_set.json is an optional part (docs/release-format.md); without it there
        # are no inputs to compare logits on.
        pytest.skip(f"no golden eval set at {path}")
    try:
        return _parse_eval_set(read_json(path), _vocab_size(vla_release.root / "model" / "config.json"))
    except (ReleaseError, KeyError, TypeError, ValueError) as e:
        fail("golden eval set unreadable", e, file=path, fix="list sequences of input_ids")


def _vocab_size(config_path: Path) -> int | None:
    """config.json's vocab_size when it reads as one (a broken config is another check's failure)."""
    try:
        vocab = read_json(config_path).get("vocab_size")
    except (ReleaseError, AttributeError):
        return None
    return vocab if type(vocab) is int and vocab > 0 else None


# a golden eval set is a handful of sequences; these bound the forward passes a hostile one can ask for
MAX_EVAL_SEQUENCES: Final = 1024
MAX_EVAL_TOKENS: Final = 262_144  # over all sequences


def _parse_eval_set(data: Any, vocab: int | None) -> list[tuple[str, list[int]]]:
    """(name, input_ids) of every sequence: token ids are integers the model's vocabulary holds,
    within the bounds on sequences and tokens."""
    bound = vocab or 2**31
    sequences = data["sequences"]
    if not isinstance(sequences, list):
        raise ValueError("sequences is not a list")
    if len(sequences) > MAX_EVAL_SEQUENCES:
        raise ValueError(f"{len(sequences)} sequences, over the limit of {MAX_EVAL_SEQUENCES}")
    total = sum(len(s["input_ids"]) for s in sequences if isinstance(s, dict) and isinstance(s.get("input_ids"), list))
    if total > MAX_EVAL_TOKENS:
        raise ValueError(f"{total} tokens in all, over the limit of {MAX_EVAL_TOKENS}")
    out = []
    for i, s in enumerate(sequences):
        ids = s["input_ids"]
        if not (isinstance(ids, list) and ids and all(type(t) is int and 0 <= t < bound for t in ids)):
            raise ValueError(f"sequences[{i}].input_ids is not a non-empty list of token ids from 0 to {bound - 1}")
        out.append((str(s["name"]), ids))
    if not out:
        raise ValueError("no sequences")
    return out


def _load_merged(
    path: Path, session: VLASession, node: pytest.Item, label: str, *, reported_by: str | None = None
) -> Any:
    """The model at ``path`` in stock transformers, once its config.json is known to describe its
    weights (transformers builds whatever the config says: a damaged one could ask for 10**12
    layers). ``reported_by``: the checks that report a config/weights mismatch, if they run.
    Up to ``--vla-stream-weights-above`` MiB of float32 weights it is ``from_pretrained``; above,
    the same class whose modules read their weights from the mapped files one at a time
    (``vla_reference.hf.streamed_model``: the process holds one module's weights, not the model)."""
    from transformers import AutoModelForCausalLM

    try:
        source = HFSource(path)
    except ReleaseError as e:
        if reported_by:
            # Why skip: the same defect fails the checks named here; one defect, one failure.
            pytest.skip(f"the model at {path} does not load as written (reported by {reported_by}): {e}")
        Findings("the model does not load as written").fail_on(e, "the model does not load as written")
    size = float32_bytes(source)
    streamed = size > session.options.stream_weights_above_mib * 2**20
    measure(node, "parity_loader", {label: "streamed" if streamed else "from_pretrained"})
    # float32 on both sides: the comparison measures layout, not storage precision
    try:
        if streamed:
            return streamed_model(source)
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, trust_remote_code=False).eval()
    except ReleaseError as e:
        Findings("transformers cannot load the model").fail_on(e, "transformers cannot load the model")
    except Exception as e:  # noqa: BLE001 - transformers raises many types; name the directory instead
        fail("transformers cannot load the model", f"{type(e).__name__}: {e}", file=path, fix="ship a loadable model/")


_THIS_FILE_DIGEST: Final = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
# logits of a batch of the streamed forward, at most (each batch reads every weight once)
_BATCH_LOGIT_BYTES: Final = 256 * 2**20


def _merged_logits(model: Any, eval_set: list[tuple[str, list[int]]]) -> list[torch.Tensor]:
    """Logits [T, vocab] per sequence. A streamed model reads every weight from the files at each
    forward, so its sequences go in right-padded batches (a causal model's logits at the real
    positions do not depend on what follows; they differ from one-by-one by float32 rounding,
    ~1e-5 here, inside the float32 tolerance); ``from_pretrained``'s model runs one by one."""
    with torch.no_grad():
        if next(model.parameters()).device.type != "meta":  # loaded whole: no batching needed
            return [model(torch.tensor([ids])).logits[0].float() for _, ids in eval_set]
        vocab = int(model.config.vocab_size)
        out: list[torch.Tensor] = []
        i = 0
        while i < len(eval_set):
            batch = [eval_set[i][1]]
            while i + len(batch) < len(eval_set):
                nxt = eval_set[i + len(batch)][1]
                width = max(len(nxt), *map(len, batch))
                if (len(batch) + 1) * width * vocab * 4 > _BATCH_LOGIT_BYTES:
                    break
                batch.append(nxt)
            width = max(map(len, batch))
            ids = torch.zeros(len(batch), width, dtype=torch.long)
            mask = torch.zeros(len(batch), width, dtype=torch.long)
            for row, seq in enumerate(batch):
                ids[row, : len(seq)], mask[row, : len(seq)] = torch.tensor(seq), 1
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            out += [logits[row, : len(seq)].clone() for row, seq in enumerate(batch)]
            i += len(batch)
        return out


def _cached_logits(
    session: VLASession,
    node: pytest.Item,
    label: str,
    paths: list[Path],
    what: str,
    eval_set: list[tuple[str, list[int]]],
    compute: Callable[[], list[torch.Tensor]],
    step: str | None = None,
) -> list[torch.Tensor]:
    """``compute()``'s logits, kept in the artefact cache under the content digest of ``paths``
    (the model or checkpoint they are computed from), the eval set, ``what`` (the layout, the
    architecture read, the loader), the torch, transformers and converter versions and this
    file: a later run on the same bytes with the same code reads them instead of running the
    forward again (the report says which, under ``measured.parity_logits``)."""
    import transformers
    from safetensors.torch import load_file, save

    cache = session.cache
    salt = "|".join(
        (
            f"logits {what}",
            hashlib.sha256(json.dumps(eval_set).encode()).hexdigest(),
            f"torch {torch.__version__}",
            f"transformers {transformers.__version__}",
            _THIS_FILE_DIGEST,  # how the logits are computed here (batching) is part of the key too
        )
    )
    key = cache.digest(*paths, salt=salt)
    hit = (cache.root / key / "logits.safetensors").is_file()

    def write(dst: Path) -> None:
        with cache.step(step) if step else contextlib.nullcontext():  # told only when it runs
            logits = compute()
        atomic_write_bytes(dst, save({str(i): t.contiguous() for i, t in enumerate(logits)}))

    path = cache.build(key, "logits.safetensors", write)
    measure(node, "parity_logits", {label: "cached" if hit else "computed"})
    stored = load_file(path)
    return [stored[str(i)] for i in range(len(eval_set))]


def _merged_side(
    session: VLASession,
    node: pytest.Item,
    label: str,
    merged_dir: Path,
    eval_set: list[tuple[str, list[int]]],
    reported_by: str | None = None,
) -> list[torch.Tensor]:
    """The merged model's logits on the eval set, kept by content (the loader threshold is part of
    the key: a streamed forward batches its sequences)."""
    return _cached_logits(
        session,
        node,
        label,
        [merged_dir],
        f"merged, stream above {session.options.stream_weights_above_mib} MiB",
        eval_set,
        lambda: _merged_logits(_load_merged(merged_dir, session, node, label, reported_by=reported_by), eval_set),
    )


def _tolerance(session: VLASession, dtype: torch.dtype) -> Tolerance:
    tol, o = default_tolerance(dtype), session.options
    return Tolerance(
        atol=tol.atol if o.logit_atol is None else o.logit_atol,
        rtol=tol.rtol if o.logit_rtol is None else o.logit_rtol,
        kl=tol.kl if o.logit_kl is None else o.logit_kl,
        top1=tol.top1 if o.logit_top1 is None else o.logit_top1,
    )


def _alt_layout(src: Checkpoint) -> Layout | None:
    """A layout unlike the shipped one: wider TP (fewer query groups than ranks when possible), PP=1."""
    shipped = src.layout
    for tp in (shipped.tp * 2, shipped.tp * 4, 2 * src.arch.num_query_groups, 1):
        layout = Layout(tp=tp, pp=1, ep=1)
        if layout == Layout(tp=shipped.tp, pp=shipped.pp, ep=shipped.ep):
            continue
        try:
            check_layout(src.arch, layout)
        except ReleaseError:
            continue
        return layout
    return None


def _fail(
    title: str,
    comparisons: list[tuple[str, list[ParityStats], Tolerance]],
    fix: str,
    release: Release,
    node: pytest.Item,
) -> None:
    __tracebackhide__ = True
    blocks, findings = [], []
    for label, stats, tol in comparisons:
        bad = [s for s in stats if not s.within]
        if bad:
            blocks.append(
                f"{label}: {len(bad)} of {len(stats)} sequences out of tolerance ({tol.describe()})\n"
                + format_table(stats)
            )
            findings += [
                Finding(
                    f"{label}: out of tolerance",
                    f"max |Δ| {s.max_abs:.3g}, KL {s.kl:.3g}, top-1 {s.top1:.1%} (worst at position {s.worst[0]}, "
                    f"id {s.worst[1]})",
                    tol.describe(),
                    release.root / "golden" / "eval_set.json",
                    s.name,
                    fix,
                )
                for s in bad
            ]
    if blocks:
        raise FindingsFailed(f"{title}\n" + "\n\n".join(blocks) + f"\nFix: {fix}", findings, release.root)


_EDGES: Final = [10.0**e for e in range(-9, 3)]  # |Δlogit| histogram bins, 1e-9 to 1e2


def _compare(
    label: str, got: list[torch.Tensor], want: list[torch.Tensor], names: list[str], tol: Tolerance, node: pytest.Item
):
    stats = [compare_logits(n, g, w, tol) for n, g, w in zip(names, got, want, strict=True)]
    pairs = [(g, w) for g, w in zip(got, want, strict=True) if g.shape == w.shape]  # a shape mismatch is a finding
    diff = torch.cat([(g.double() - w.double()).abs().flatten() for g, w in pairs] or [torch.zeros(0)])
    counts = torch.histc(diff.clamp(_EDGES[0], _EDGES[-1]).log10(), bins=len(_EDGES) - 1, min=-9, max=2)
    measure(
        node,
        "parity",
        {
            label: {
                "sequences": [dataclasses.asdict(s) for s in stats],
                "histogram": {"edges": _EDGES, "counts": [int(c) for c in counts]},
                "tolerance": dataclasses.asdict(tol),
            },
        },
    )
    return label, stats, tol


@rule(
    "VLA-PAR-001",
    fix=(
        "inspect the worst positions: a split bug at that layout, or expected logits from another model "
        "(`vla-release logits RELEASE` recomputes them; `vla-release remerge RELEASE` re-merges model/)"
    ),
)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_logit_parity(
    layout: str,
    vla_release: Release,
    vla_session: VLASession,
    vla_model_dir: Path,
    eval_set: list[tuple[str, list[int]]],
    request: pytest.FixtureRequest,
) -> None:
    """The sharded forward (real ranks) equals the merged model in transformers on the golden eval set.

    At the shipped layout the merged model is the shipped one (and the training-side logits, when
    the release ships them, must agree too); at another layout the training checkpoint is
    resharded and compared with its own merge, which catches layout-only bugs.
    """
    names = [n for n, _ in eval_set]
    sequences = [ids for _, ids in eval_set]
    has_ckpt = vla_release.part("checkpoint") is not None
    if layout == "alt-layout" and not has_ckpt:
        # Why skip: checkpoint/ is optional (an inference-only release); the sharded side needs it.
        pytest.skip(f"no Megatron checkpoint at {vla_release.root / 'checkpoint'} (optional part)")
    comparisons = []
    if layout == "shipped-layout":
        merged_dir = vla_model_dir
        reported_by = "test_config_agrees_with_args and test_merge_equals_shipped_model" if has_ckpt else None
        merged = _merged_side(vla_session, request.node, "merged model", merged_dir, eval_set, reported_by)
        expected = vla_release.root / "golden" / "expected_logits.safetensors"
        if expected.is_file():
            ref = SafetensorsFile(expected)
            missing = [n for n in names if n not in ref]
            if missing:
                fail(
                    "expected logits incomplete",
                    f"lack {', '.join(missing)}",
                    file=expected,
                    fix="record every eval sequence",
                )
            want = [ref.tensor(n).float() for n in names]
            comparisons.append(
                _compare(
                    "merged model vs training-side logits",
                    merged,
                    want,
                    names,
                    _tolerance(vla_session, ref.dtype(names[0])),
                    request.node,
                )
            )
        if has_ckpt:
            src: MegatronSource = request.getfixturevalue("vla_rank_checkpoint")
            sharded = _cached_logits(
                vla_session,
                request.node,
                f"sharded {src.layout.describe()}",
                [src.path],
                f"sharded {src.layout.describe()} {src.arch!r}",
                eval_set,
                lambda: sharded_logits(src, sequences),
                step=f"parity: sharded forward at {src.layout.describe()}",
            )
            comparisons.append(
                _compare(
                    f"sharded {src.layout.describe()} vs merged model",
                    sharded,
                    merged,
                    names,
                    _tolerance(vla_session, torch.float32),
                    request.node,
                )
            )
        if not comparisons:
            # Why skip: neither the checkpoint nor expected logits are shipped (both optional parts).
            pytest.skip("nothing to compare the merged model with: no checkpoint and no expected logits")
        if has_ckpt and any(not s.within for s in comparisons[-1][1]):
            fix = (
                "the shipped model does not compute what the training checkpoint computes: in the release, "
                "`vla-release remerge .` (merges checkpoint/ into model/ as pack does); if it persists, inspect the "
                "failing sequences' worst positions"
            )
        else:
            fix = (
                "golden/expected_logits.safetensors is not what the shipped model computes: if model/ is the "
                "intended model, in the release: `vla-release logits .` (recomputes them as pack does)"
            )
    else:
        src = request.getfixturevalue("vla_checkpoint")
        target = _alt_layout(src)
        if target is None:
            # Why skip: the model admits no other TP/PP layout; the shipped-layout parity case still runs.
            pytest.skip("no valid layout other than the shipped one for this model")
        merged_dir = request.getfixturevalue("vla_merged_checkpoint")
        cache: ArtefactCache = request.getfixturevalue("vla_artefacts")
        key = cache.digest(merged_dir)
        name = f"parity-tp{target.tp}-pp{target.pp}-ep{target.ep}"
        resharded = cache.build(key, name, lambda dst: write_megatron(HFSource(merged_dir), dst, target, fsync=False))
        alt = MegatronSource.open(resharded, verify=False)
        alt.arch = (
            dataclasses.replace(alt.arch, vocab_size=src.arch.vocab_size) if alt.arch.vocab_size is None else alt.arch
        )
        merged = _merged_side(vla_session, request.node, "its merge", merged_dir, eval_set)
        sharded = _cached_logits(
            vla_session,
            request.node,
            f"sharded {target.describe()}",
            [resharded],
            f"sharded {target.describe()} {alt.arch!r}",
            eval_set,
            lambda: sharded_logits(alt, sequences),
            step=f"parity: sharded forward at {target.describe()}",
        )
        comparisons.append(
            _compare(
                f"sharded {target.describe()} (resharded) vs its merge",
                sharded,
                merged,
                names,
                _tolerance(vla_session, torch.float32),
                request.node,
            )
        )
        fix = "a layout-dependent bug in the converter or the checkpoint's split; inspect the worst positions"
    _fail(f"logit parity at the {layout}", comparisons, fix, vla_release, request.node)
