"""``vla-release pack``: training outputs (or a fine-tuned Hugging Face directory) to a release.

The inputs a lab holds after training (a Megatron checkpoint of either format and any layout, the
tokenizer package, the processor config, the card, and optionally the config matrix, the
environment, the launch scripts and the demos) become a release directory in the documented
format (docs/release-format.md):

- ``model/``: the merged checkpoint (safetensors, sharded with an index above
  ``max_shard_size``), with the token IDs of the tokenizer's bos/eos/pad and the processor's action
  ``norm_stats`` in config.json (a merge alone cannot know them), the tokenizer package, the
  processor's files and the card;
- ``checkpoint/``: the training checkpoint as given;
- ``golden/``: the eval set (given, or the golden texts through the tokenizer), the expected
  logits (the sharded forward over real torch.distributed ranks on the training checkpoint; the
  plain forward of the weights for a release with no checkpoint) and the preprocessing snapshots
  of the shipped processor;
- ``release.json``.

Everything is written in a staging directory beside ``out`` and renamed into place, so a pack
killed half-way leaves nothing that looks like a release. Every file but the computed ones (the
expected logits and the snapshots' floats) is a pure function of the inputs: packing the same
inputs twice gives the same bytes.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import torch

from .._fs import atomic_dir, read_json
from ..errors import ReleaseError
from ._manifest import write_manifest
from ._release import PARTS
from ._semver import VersionError, bump_between, parse_version

__all__ = ["pack", "PackError", "GOLDEN_TEXTS", "DEFAULT_MAX_SHARD"]

DEFAULT_MAX_SHARD: Final = 5 * 10**9
EVAL_SET: Final = "golden/eval_set.json"
EXPECTED_LOGITS: Final = "golden/expected_logits.safetensors"
# The eval set made when none is given: interleaved multimodal texts over the VLA tokens. Text
# that a tokenizer without those tokens still encodes (to byte-level pieces).
GOLDEN_TEXTS: Final = (
    "Describe this driving scene:<|image_start|><|image|><|image|><|image_end|> The action is:<|act:stop|>",
    "<|video_start|><|camera:front|><|t_0|><|image|><|t_1|><|image|><|video_end|> Turn left at the next junction.",
    "Say <|ipa_start|><|ipa_s|><|ipa_t|><|ipa_ɹ|><|ipa_i|><|ipa_t|><|ipa_end|> then "
    "<|script_start|><|blender:cube|><|blender:scale|><|blender:end|><|script_end|>",
    "The ego vehicle approaches a busy intersection. The traffic light for the ego lane is red, so the vehicle "
    "slows down and stops behind the white line.<|action_start|><|act:slow_down|><|act:stop|><|action_end|>",
)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_HF_WEIGHTS = re.compile(r"model(-\d{5}-of-\d{5})?\.safetensors")


class PackError(ReleaseError):
    """The inputs cannot make a release (the message names the input and the fix)."""


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _copy_file(src: Path, dst: Path) -> None:
    """A plain copy of a regular file's bytes (no metadata: the bytes are the contract)."""
    if src.is_symlink() or not src.is_file():
        raise PackError("not a regular file (links are not followed into a release)", path=src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    if os.access(src, os.X_OK):
        dst.chmod(0o755)


def _copy_tree(src: Path, dst: Path) -> None:
    """Every regular file under ``src`` (sorted; Python caches and .git skipped: torch_dist's
    ``.metadata`` is a dotfile that must go); a link or special file is refused."""
    if not src.is_dir():
        raise PackError("not a directory", path=src)
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if "__pycache__" in rel.parts or ".git" in rel.parts:
            continue
        if path.is_dir() and not path.is_symlink():
            continue
        _copy_file(path, dst / rel)


# -- inputs ------------------------------------------------------------------------------------


def _tokenizer_dir(path: Path) -> Path:
    from ..tokenizer import TOKENIZER_FILES

    folder = path.parent if path.is_file() else path
    if not (folder / "tokenizer.json").is_file():
        raise PackError(
            "no tokenizer.json here",
            path=folder,
            fix=f"pass --tokenizer a directory holding the tokenizer package ({', '.join(TOKENIZER_FILES)})",
        )
    return folder


def _load_tokenizer(tok_dir: Path) -> Any:
    """tokenizer.json as tokenizers loads it (a file that makes it panic is refused, named)."""
    from tokenizers import Tokenizer

    from ..errors import MalformedFileError
    from ..tokenizer import probe_tokenizer

    path = tok_dir / "tokenizer.json"
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # noqa: BLE001 - the Rust side raises plain Exception
        raise MalformedFileError(f"tokenizers cannot load it: {e}", path=path) from e
    probe_tokenizer(tok, path)
    return tok


def _special_ids(tok: Any, tok_dir: Path) -> dict[str, int]:
    """bos/eos/pad token IDs: special_tokens_map.json's tokens, looked up in tokenizer.json."""
    names = read_json(tok_dir / "special_tokens_map.json") if (tok_dir / "special_tokens_map.json").is_file() else {}
    ids: dict[str, int] = {}
    for role in ("bos", "eos", "pad"):
        entry = names.get(f"{role}_token") if isinstance(names, dict) else None
        text = entry.get("content") if isinstance(entry, dict) else entry
        if isinstance(text, str) and (i := tok.token_to_id(text)) is not None:
            ids[f"{role}_token_id"] = i
    return ids


def _processor_files(path: Path) -> dict[str, Path]:
    """The processor's files: its config (a file, or the one in a directory), the legacy configs
    beside it and the codebooks it names (plain names in the same directory)."""
    from ..processor import LEGACY_PREPROCESSOR_CONFIG, LEGACY_VIDEO_CONFIG, PROCESSOR_CONFIG

    config = path if path.is_file() else path / PROCESSOR_CONFIG
    if not config.is_file():
        raise PackError(
            f"no {PROCESSOR_CONFIG}", path=path, fix="pass --processor the processor's config or its directory"
        )
    folder = config.parent
    files = {PROCESSOR_CONFIG: config}
    for name in (LEGACY_PREPROCESSOR_CONFIG, LEGACY_VIDEO_CONFIG):
        if (folder / name).is_file():
            files[name] = folder / name
    for key, name in _codebooks(read_json(config)):
        if not isinstance(name, str) or Path(name).name != name or name.startswith("."):
            raise PackError("a codebook must be a plain file name beside the config", path=config, key=key)
        if not (folder / name).is_file():
            raise PackError("the codebook it names is missing", path=folder / name, key=key)
        files[name] = folder / name
    return files


def _codebooks(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if k.endswith("codebook_file"):
                yield key, v
            else:
                yield from _codebooks(v, key)


def _norm_stats(processor_config: Path) -> Any:
    actions = read_json(processor_config).get("actions")
    return actions.get("norm_stats") if isinstance(actions, dict) else None


def _eval_sequences(eval_set: Path | None, tok: Any) -> dict[str, Any]:
    if eval_set is not None:
        data = read_json(eval_set)
        seqs = data.get("sequences") if isinstance(data, dict) else None
        if not isinstance(seqs, list) or not seqs:
            raise PackError("no 'sequences' list", path=eval_set, key="sequences", fix="see docs/release-format.md")
        for i, s in enumerate(seqs):
            ids = s.get("input_ids") if isinstance(s, dict) else None
            if not isinstance(ids, list) or not ids or not all(isinstance(t, int) and t >= 0 for t in ids):
                raise PackError("input_ids must be a non-empty list of token IDs", path=eval_set, key=f"sequences[{i}]")
        return data
    return {
        "description": "token ids of interleaved multimodal sequences (the golden texts through the shipped "
        "tokenizer); logits in float32",
        "sequences": [{"name": f"seq_{i}", "input_ids": tok.encode(t).ids} for i, t in enumerate(GOLDEN_TEXTS)],
    }


# -- the parts ---------------------------------------------------------------------------------


def _merge(checkpoint: Path, model: Path, vocab: int, overrides: dict[str, Any], max_shard: int) -> Any:
    from .._convert import open_source
    from ..hf._checkpoint import write_hf
    from ..megatron._legacy import MegatronSource

    src = open_source(checkpoint, vocab_size=vocab)
    try:
        write_hf(src, model, fsync=False, config_overrides=overrides, max_shard_size=max_shard)
    finally:
        if isinstance(src, MegatronSource):
            src.close()
    return src.arch


def _copy_hf(hf: Path, model: Path, overrides: dict[str, Any]) -> None:
    """A fine-tuned Hugging Face directory's weights and configs; bos/eos/pad IDs and norm_stats
    added to config.json where it has none (what it has is kept, and judged by the suite)."""
    if not (hf / "config.json").is_file():
        raise PackError("no config.json", path=hf, fix="pass --hf a Hugging Face model directory")
    names = sorted(p.name for p in hf.iterdir() if _HF_WEIGHTS.fullmatch(p.name))
    if not names:
        raise PackError("no model.safetensors (or shards)", path=hf, fix="save the model with safe_serialization")
    if len(names) > 1 or names[0] != "model.safetensors":
        names.append("model.safetensors.index.json")
    model.mkdir(parents=True)
    for name in names:
        _copy_file(hf / name, model / name)
    config = read_json(hf / "config.json")
    config.update({k: v for k, v in overrides.items() if k not in config and v is not None})
    (model / "config.json").write_text(_dump(config))
    if (hf / "generation_config.json").is_file():
        _copy_file(hf / "generation_config.json", model / "generation_config.json")


def _expected_logits(checkpoint: Path | None, model: Path, sequences: list[list[int]], vocab: int, dst: Path) -> str:
    """Logits of every sequence; returns where they came from (the file's ``source`` metadata)."""
    from ..converter._rows import Rows
    from ..hf._safetensors import header_for, write_rows

    if checkpoint is not None:
        logits, how = _sharded(checkpoint, sequences, vocab), "sharded forward over the training checkpoint, float32"
    else:
        from ..hf._checkpoint import HFSource
        from ..parity import reference_logits

        src = HFSource(model)
        arch = dataclasses.replace(src.arch, params_dtype=torch.float32)

        def weight(key: str) -> torch.Tensor:  # one tensor at a time, a view of the mapped file
            return src.get(key).tensor().float()

        logits = [reference_logits(arch, weight, torch.tensor([ids]))[0] for ids in sequences]
        how = "reference forward of the merged weights, float32"
    entries = [(f"seq_{i}", tuple(t.shape), torch.float32) for i, t in enumerate(logits)]
    with dst.open("wb") as f:
        f.write(header_for(entries, {"format": "pt", "source": how}))
        for t in logits:
            write_rows(f, Rows.of(t.float().contiguous()))
    return how


def _sharded(checkpoint: Path, sequences: list[list[int]], vocab: int) -> list[torch.Tensor]:
    """The sharded forward at the checkpoint's layout (a torch_dist checkpoint is split at its
    recorded layout first, as megatron-core does when it loads one)."""
    from .._convert import open_source
    from ..megatron._legacy import MegatronSource
    from ..megatron._rank_writer import write_megatron
    from ..parity import sharded_logits

    src = open_source(checkpoint, vocab_size=vocab)
    if isinstance(src, MegatronSource):
        try:
            return list(sharded_logits(src, sequences))
        finally:
            src.close()
    with tempfile.TemporaryDirectory(prefix="vla-pack-ranks-") as tmp:
        write_megatron(src, Path(tmp) / "ranks", dataclasses.replace(src.layout, vpp=1), fsync=False)
        ranks = MegatronSource.open(Path(tmp) / "ranks", vocab_size=vocab, verify=False)
        try:
            return list(sharded_logits(ranks, sequences))
        finally:
            ranks.close()


def _record_snapshots(model: Path, root: Path, version: str) -> None:
    """The preprocessing snapshots, recorded with the processor as a user loads it from ``model/``."""
    from transformers import AutoProcessor

    from ..preprocessing._cases import CASES, record, snapshot_file
    from ..preprocessing._snapshot import serialize
    from ..processor import PROCESSOR_CONFIG

    processor = AutoProcessor.from_pretrained(model, trust_remote_code=False)
    config = json.loads((model / PROCESSOR_CONFIG).read_text())
    for case in CASES:
        f = snapshot_file(root, case)
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(serialize(record(processor, case, version=version, processor_config=config)))


def _launch_script(root: Path) -> str | None:
    from ..repro._launch import DEFAULT_LAUNCH_SCRIPT

    if (root / DEFAULT_LAUNCH_SCRIPT).is_file():
        return DEFAULT_LAUNCH_SCRIPT
    scripts = sorted((root / PARTS["scripts"].path).glob("*.sh")) if (root / PARTS["scripts"].path).is_dir() else []
    return scripts[0].relative_to(root).as_posix() if len(scripts) == 1 else None


def _config(root: Path, launch_script: str | None) -> str | None:
    """The config of the matrix this release was trained with: the one its launch script names,
    else the only one."""
    folder = root / PARTS["configs"].path
    if not folder.is_dir():
        return None
    configs = sorted(p.relative_to(root).as_posix() for p in folder.glob("*.json"))
    if launch_script is not None:
        text = (root / launch_script).read_text(errors="replace")
        named = [c for c in configs if c in text]
        if len(named) == 1:
            return named[0]
    return configs[0] if len(configs) == 1 else None


def _check_bump(baseline: Path, staged: Path, version: str) -> None:
    """Refuse a version that understates the change from ``baseline`` (docs/metadata.md)."""
    from ._manifest import read_manifest
    from ._semver import next_version
    from ._versioning import diff_releases, required_bump

    base_version = str(read_manifest(baseline).get("version"))
    changes = diff_releases(baseline, staged)
    need = required_bump(changes)
    try:
        have = bump_between(parse_version(base_version), parse_version(version))
    except VersionError as e:
        raise PackError(str(e), path=baseline / "release.json", key="version") from e
    if have < need:
        least = next_version(parse_version(base_version), need)
        what = "; ".join(f"{c.summary} ({c.path})" for c in changes if c.bump >= need) or "the release changed"
        raise PackError(
            f"version {version} understates the change from {base_version}: {what} needs a {need.name.lower()} bump",
            key="version",
            fix=f"pass --version {least} (or higher)",
        )


def pack(
    out: Path,
    *,
    checkpoint: Path | None = None,
    hf: Path | None = None,
    tokenizer: Path,
    processor: Path | None,
    card: Path,
    name: str,
    version: str,
    date: str | None = None,
    configs: Path | None = None,
    docker: Path | None = None,
    scripts: Path | None = None,
    examples: Path | None = None,
    eval_set: Path | None = None,
    baseline: Path | None = None,
    max_shard_size: int = DEFAULT_MAX_SHARD,
    overwrite: bool = False,
    fsync: bool = True,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Make a release at ``out`` from ``checkpoint`` (Megatron) or ``hf`` (a Hugging Face
    directory) and the other inputs; returns its release.json. Nothing is left at ``out`` unless
    all of it was written; ``baseline`` refuses a version below the bump the change needs.

    ``date``: YYYY-MM-DD; default ``SOURCE_DATE_EPOCH``'s day if set, else today (UTC).

    Example:
        >>> pack(Path("out"), checkpoint=Path("ckpt"), tokenizer=Path("tok"), processor=Path("proc"),
        ...      card=Path("README.md"), name="VLA-1B", version="1.0.0")  # doctest: +SKIP
    """
    if (checkpoint is None) == (hf is None):
        raise PackError(
            "give exactly one of a Megatron checkpoint and a Hugging Face directory", fix="--checkpoint or --hf"
        )
    try:
        parse_version(version)
    except VersionError as e:
        raise PackError(str(e), key="version", fix="pass --version X.Y.Z (SemVer)") from e
    if not name.strip():
        raise PackError("the release needs a name", key="name", fix="pass --name")
    date = date or _default_date()
    if not _DATE.fullmatch(date):
        raise PackError(f"date {date!r} is not YYYY-MM-DD", key="date", fix="pass --date YYYY-MM-DD")
    if not card.is_file():
        raise PackError("no model card here", path=card, fix="pass --card the card's README.md")
    tok_dir = _tokenizer_dir(tokenizer)
    proc_files = _processor_files(processor) if processor is not None else {}
    from .._convert import tokenizer_vocab_size
    from ..megatron import find_checkpoint
    from ..tokenizer import TOKENIZER_FILES

    vocab = tokenizer_vocab_size(tok_dir)
    ckpt_root = find_checkpoint(checkpoint).root if checkpoint is not None else None
    tok = _load_tokenizer(tok_dir)
    ids = _special_ids(tok, tok_dir)
    overrides: dict[str, Any] = dict(ids)
    if "processor_config.json" in proc_files and (stats := _norm_stats(proc_files["processor_config.json"])):
        overrides["norm_stats"] = stats
    with atomic_dir(out, overwrite=overwrite, fsync=fsync) as tmp:
        model = tmp / PARTS["model"].path
        if ckpt_root is not None:
            log(f"merging {ckpt_root}")
            arch = _merge(ckpt_root, model, vocab, overrides, max_shard_size)
            (model / "generation_config.json").write_text(
                _dump({**ids, "max_length": arch.max_position_embeddings, "do_sample": False})
            )
            log("copying the training checkpoint")
            _copy_tree(ckpt_root, tmp / PARTS["checkpoint"].path)
        else:
            assert hf is not None
            _copy_hf(hf, model, overrides)
        for fname in TOKENIZER_FILES:
            if (tok_dir / fname).is_file():
                _copy_file(tok_dir / fname, model / fname)
        for fname, path in sorted(proc_files.items()):
            _copy_file(path, model / fname)
        _copy_file(card, model / "README.md")
        for part, given in (("configs", configs), ("docker", docker), ("scripts", scripts), ("examples", examples)):
            if given is not None:
                _copy_tree(given, tmp / PARTS[part].path)
        data = _eval_sequences(eval_set, tok)
        (tmp / EVAL_SET).parent.mkdir(parents=True, exist_ok=True)
        (tmp / EVAL_SET).write_text(_dump(data))
        log("computing the expected logits")
        sequences = [list(s["input_ids"]) for s in data["sequences"]]
        _expected_logits(ckpt_root, model, sequences, vocab, tmp / EXPECTED_LOGITS)
        if proc_files:
            log("recording the preprocessing snapshots")
            _record_snapshots(model, tmp, version)
        launch = _launch_script(tmp)
        manifest = write_manifest(
            tmp, name=name, version=version, date=date, config=_config(tmp, launch), launch_script=launch
        )
        if baseline is not None:
            _check_bump(baseline, tmp, version)
    return manifest


def _default_date() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (
        _dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc)
        if epoch and epoch.isdigit()
        else _dt.datetime.now(_dt.timezone.utc)
    )
    return when.date().isoformat()


def suite_command(out: Path, baseline: Path | None, extra: Sequence[str] = ()) -> list[str]:
    """The conformance suite on a packed release, as ``pack`` runs it. A release with no
    training checkpoint (a fine-tune packed from ``--hf``) is partial by design: the verdict
    says which areas were not checked, and the exit status is 0 when nothing failed."""
    cmd = [sys.executable, "-m", "pytest", f"--vla-release={out}", "-q", "-p", "no:cacheprovider"]
    if baseline is not None:
        cmd.append(f"--vla-baseline={baseline}")
    if not (out / PARTS["checkpoint"].path).is_dir():
        cmd.append("--vla-allow-partial")
    return cmd + list(extra)
