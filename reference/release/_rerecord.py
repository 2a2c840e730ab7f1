"""Re-derive a part of a release from the others, as ``pack`` derives it, after a deliberate
change: ``vla-release snapshots`` (the preprocessing snapshots), ``remerge`` (model/'s weights
and configs from checkpoint/), ``logits`` (the expected logits). Each refreshes release.json, so
the release is consistent again when the command ends; each is the fix a check prints.

The snapshots are recorded with the release's own processor as a user loads it from ``model/``
(the way ``pack`` records them), under the release's version or ``--version X``. X is written
into release.json and wherever the card states the version, and release.json is refreshed, so
the release is consistent again when the command ends. A change of the preprocessing under the
version the snapshots were recorded for is refused (any preprocessing change is a new release,
docs/metadata.md): the error names the least version that covers it.

``resave_processor`` first rewrites the processor's config files as
``save_pretrained(from_pretrained(model/))`` writes them (the round trip VLA-PRE-004 checks).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._fs import atomic_write_bytes
from ..errors import LayoutError, ReleaseError
from ._manifest import read_manifest, write_manifest
from ._release import PARTS
from ._semver import Bump, VersionError, next_version, parse_version

__all__ = ["rerecord_snapshots", "remerge_model", "recompute_logits", "SnapshotsError"]


class SnapshotsError(ReleaseError):
    """The snapshots cannot be re-recorded as asked (the message names the file, key and fix)."""


def _processor(model: Path) -> Any:
    from transformers import AutoProcessor

    from ..processor import reference_processor  # noqa: F401 - registers VLAProcessor with the Auto classes

    return AutoProcessor.from_pretrained(model, trust_remote_code=False)


def _resave(model: Path, log: Callable[[str], None]) -> list[str]:
    """The processor config files rewritten as save_pretrained writes them; returns those changed."""
    from ..processor import LEGACY_PREPROCESSOR_CONFIG, LEGACY_VIDEO_CONFIG, PROCESSOR_CONFIG

    changed = []
    with tempfile.TemporaryDirectory(prefix="vla-resave-") as tmp:
        _processor(model).save_pretrained(tmp)
        for name in (PROCESSOR_CONFIG, LEGACY_PREPROCESSOR_CONFIG, LEGACY_VIDEO_CONFIG):
            new = Path(tmp) / name
            if (model / name).is_file() and new.is_file() and new.read_bytes() != (model / name).read_bytes():
                atomic_write_bytes(model / name, new.read_bytes())
                changed.append(name)
                log(f"re-saved {model / name}")
    return changed


def rerecord_snapshots(
    root: Path,
    *,
    version: str | None = None,
    resave_processor: bool = False,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Re-record ``root``'s preprocessing snapshots (and refresh release.json); returns
    ``{"version": V, "changed": [cases whose outputs changed], "written": N}``.

    Raises:
        SnapshotsError: the preprocessing changed and ``version`` (or the release's own) is the
            one the old snapshots were recorded for.
    """
    from ..card._release import restate_card_version
    from ..preprocessing._cases import CASES, record, snapshot_file
    from ..preprocessing._snapshot import load_snapshot, parse, serialize
    from ..processor import PROCESSOR_CONFIG

    model = root / PARTS["model"].path
    if not (model / PROCESSOR_CONFIG).is_file():
        raise LayoutError(
            f"no {PROCESSOR_CONFIG}: the release has no processor to record",
            path=model,
            fix="a text-only release has no preprocessing snapshots",
        )
    current = str(read_manifest(root).get("version"))
    target = version or current
    try:
        parse_version(target)
    except VersionError as e:
        raise SnapshotsError(str(e), path=root / "release.json", key="version", fix="pass --version X.Y.Z") from e
    if resave_processor:
        _resave(model, log)
    processor = _processor(model)
    config = json.loads((model / PROCESSOR_CONFIG).read_text())
    fresh: dict[Path, str] = {}
    changed, refused = [], []
    for case in CASES:
        f = snapshot_file(root, case)
        text = serialize(record(processor, case, version=target, processor_config=config))
        fresh[f] = text
        if f.is_file():
            try:
                _, header, old = load_snapshot(f)
            except ReleaseError:
                continue  # unreadable: replaced
            if parse(text)[1] != old:
                changed.append(case)
                if header.get("release_version") == target:
                    refused.append(case)
    if refused:
        least = next_version(parse_version(target), Bump.MINOR)
        raise SnapshotsError(
            f"preprocessing changed under version {target}, the one the snapshots were recorded for "
            f"({', '.join(refused[:4])}{' and more' if len(refused) > 4 else ''})",
            path=root / "release.json",
            key="version",
            fix=f"in the release: `vla-release snapshots . --version {least}` (a preprocessing change needs at least "
            "a minor bump)",
        )
    if target != current:
        restate_card_version(root, target, log)
    for f, text in fresh.items():
        f.parent.mkdir(parents=True, exist_ok=True)
        if not f.is_file() or f.read_text(encoding="utf-8", errors="replace") != text:
            atomic_write_bytes(f, text.encode())
    write_manifest(root, version=target)
    log(f"recorded {len(fresh)} snapshots under version {target} ({len(changed)} changed); refreshed release.json")
    return {"version": target, "changed": changed, "written": len(fresh)}


def _vocab_and_overrides(model: Path) -> tuple[int, dict[str, Any]]:
    """What pack adds to a merged config.json, read from the release's own model/: the
    tokenizer's bos/eos/pad IDs and the processor's action norm_stats; and the true vocabulary."""
    from .._convert import tokenizer_vocab_size
    from ._pack import _load_tokenizer, _norm_stats, _special_ids

    overrides: dict[str, Any] = dict(_special_ids(_load_tokenizer(model), model))
    if (model / "processor_config.json").is_file() and (stats := _norm_stats(model / "processor_config.json")):
        overrides["norm_stats"] = stats
    return tokenizer_vocab_size(model), overrides


def remerge_model(root: Path, *, log: Callable[[str], None] = lambda _: None) -> Path:
    """Re-merge the release's ``checkpoint/`` into ``model/`` as ``pack`` does: the weights,
    config.json (with the tokenizer's bos/eos/pad IDs and the processor's norm_stats, which a bare
    ``vla-release merge`` cannot know) and generation_config.json; every other file of model/
    (tokenizer, processor, card) kept. model/ is replaced as a whole (staged, then renamed), then
    release.json is refreshed. Returns the checkpoint merged."""
    import shutil

    from .._fs import atomic_dir
    from ..megatron import find_checkpoint
    from ._pack import _HF_WEIGHTS, DEFAULT_MAX_SHARD, _dump, _merge

    model = root / PARTS["model"].path
    ckpt = find_checkpoint(root).root
    vocab, overrides = _vocab_and_overrides(model)
    replaced = {"config.json", "generation_config.json", "model.safetensors.index.json"}
    with atomic_dir(model, overwrite=True, fsync=False) as tmp:
        log(f"merging {ckpt}")
        arch = _merge(ckpt, tmp, vocab, overrides, DEFAULT_MAX_SHARD)
        (tmp / "generation_config.json").write_text(
            _dump(
                {
                    **{k: v for k, v in overrides.items() if k.endswith("_token_id")},
                    "max_length": arch.max_position_embeddings,
                    "do_sample": False,
                }
            )
        )
        for f in sorted(model.iterdir()):
            if f.is_file() and not f.is_symlink() and f.name not in replaced and not _HF_WEIGHTS.fullmatch(f.name):
                shutil.copyfile(f, tmp / f.name)
    write_manifest(root)
    log(f"re-merged {ckpt} into {model}; refreshed release.json")
    return ckpt


def recompute_logits(root: Path, *, log: Callable[[str], None] = lambda _: None) -> str:
    """Recompute ``golden/expected_logits.safetensors`` on the release's eval set as ``pack``
    does (the sharded forward over real ranks from ``checkpoint/``; the reference forward of
    ``model/`` when there is none), write it atomically and refresh release.json. Returns where
    the logits came from."""
    from ..megatron import find_checkpoint
    from ._pack import EVAL_SET, EXPECTED_LOGITS, _eval_sequences, _expected_logits

    model = root / PARTS["model"].path
    vocab, _ = _vocab_and_overrides(model)
    data = _eval_sequences(root / EVAL_SET, None)
    ckpt = find_checkpoint(root).root if (root / PARTS["checkpoint"].path).is_dir() else None
    dst = root / EXPECTED_LOGITS
    with tempfile.TemporaryDirectory(prefix=".vla-logits-", dir=dst.parent) as tmp:
        log("computing the expected logits")
        how = _expected_logits(ckpt, model, [list(s["input_ids"]) for s in data["sequences"]], vocab, Path(tmp) / "l")
        atomic_write_bytes(dst, (Path(tmp) / "l").read_bytes())
    write_manifest(root)
    log(f"wrote {dst} ({how}); refreshed release.json")
    return how
