"""What changed between a baseline release and a new one, and the version bump each change requires.

The chapter's rules (section 24.5), as a table:

    architecture  config.json fields that change the computation (layers, hidden, heads, vocab,
                  experts...)                                      -> major
    weights       per-tensor content hashes of model/ (independent of sharding) -> at least minor
    tokenizer     the tokenizer package checksum                  -> at least minor
    preprocessing what turns inputs into tokens besides the tokenizer: processor configs, chat
                  template, codebooks (model/*.safetensors that are not the model's weights)
                                                                   -> at least minor
    other         anything else: card, scripts, docs, configs...  -> patch

The chapter names the first three and the last; preprocessing is held to the tokenizer's rule
because a changed normalisation or codebook changes what the model sees as much as a changed
vocabulary does.

Files other than the weights, config.json and the tokenizer are compared by SHA-256; files of
16 MiB and more that a release's manifest lists at their size take the manifest's hash (the
manifest area verifies it), so that a large training checkpoint is not hashed twice.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from .._fs import MANIFEST, read_json
from ..converter._families import CONFIG_KEYS
from ..errors import ReleaseError
from ..tokenizer._build import TOKENIZER_FILES, tokenizer_checksum
from ._manifest import hash_files, read_manifest, release_files
from ._semver import Bump
from ._tensor_hashes import tensor_hashes, weight_files

__all__ = [
    "ChangeKind",
    "Change",
    "REQUIRED_BUMP",
    "ARCHITECTURE_KEYS",
    "PREPROCESSING_GLOBS",
    "architecture_changes",
    "weight_changes",
    "tokenizer_changes",
    "file_changes",
    "diff_releases",
    "required_bump",
]


class ChangeKind(enum.Enum):
    ARCHITECTURE = "architecture"
    WEIGHTS = "weights"
    TOKENIZER = "tokenizer"
    PREPROCESSING = "preprocessing"
    OTHER = "other files"


REQUIRED_BUMP: Final[dict[ChangeKind, Bump]] = {
    ChangeKind.ARCHITECTURE: Bump.MAJOR,
    ChangeKind.WEIGHTS: Bump.MINOR,
    ChangeKind.TOKENIZER: Bump.MINOR,
    ChangeKind.PREPROCESSING: Bump.MINOR,
    ChangeKind.OTHER: Bump.PATCH,
}

# config.json keys that change what the model computes: every key the converter maps from the
# training arguments (CONFIG_KEYS, except the storage dtype, which shows up in the weights), plus
# computation fields of the Hub families it does not map.
ARCHITECTURE_KEYS: Final[frozenset[str]] = frozenset(
    key.split(".")[0] for keys in CONFIG_KEYS.values() for key in keys.values() if key != "dtype"
) | frozenset(
    """rope_theta rope_scaling rope_parameters partial_rotary_factor sliding_window use_sliding_window
    max_window_layers mlp_bias norm_topk_prob decoder_sparse_step shared_expert_intermediate_size
    num_local_experts n_routed_experts n_shared_experts first_k_dense_replace moe_layer_freq
    qk_layernorm layer_norm_eps layer_norm_epsilon rms_norm_eps""".split()
)
_MAX_NAMES: Final = 3
# Files at least this big are not rehashed when the manifest lists them at their size (the
# manifest area verifies those hashes); smaller ones are always hashed.
TRUST_MANIFEST_FROM: Final = 16 * 2**20
# model/ files that shape the inputs besides the tokenizer package (globs)
PREPROCESSING_GLOBS: Final = ("*preprocessor_config.json", "processor_config.json", "chat_template.*", "*.safetensors")


@dataclass(frozen=True)
class Change:
    """One kind of change between the releases: a summary, and the file and key to look at."""

    kind: ChangeKind
    summary: str
    path: str  # relative to the release root
    key: str | None = None

    @property
    def bump(self) -> Bump:
        return REQUIRED_BUMP[self.kind]


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_NAMES])
    return shown + (f" and {len(items) - _MAX_NAMES} more" if len(items) > _MAX_NAMES else "")


def _arch_fields(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {prefix + k: v for k, v in config.items() if k in ARCHITECTURE_KEYS}
    for k, v in config.items():
        if k.endswith("_config") and isinstance(v, Mapping):
            out.update(_arch_fields(v, f"{prefix}{k}."))
    return out


def architecture_changes(
    old: Mapping[str, Any], new: Mapping[str, Any], *, path: str = "model/config.json"
) -> list[Change]:
    """The architecture fields of config.json that differ (one Change), and other fields (one more)."""
    a, b = _arch_fields(old), _arch_fields(new)
    diffs = [
        f"{k} {a.get(k, '(absent)')!r} -> {b.get(k, '(absent)')!r}"
        for k in sorted(a.keys() | b.keys())
        if a.get(k) != b.get(k)
    ]
    out = []
    if diffs:
        first = next(k for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k))
        out.append(Change(ChangeKind.ARCHITECTURE, f"config.json: {_names(diffs)}", path, first))
    rest = [k for k in sorted(old.keys() | new.keys()) if k not in ARCHITECTURE_KEYS and old.get(k) != new.get(k)]
    rest = [k for k in rest if not (isinstance(old.get(k), Mapping) and k.endswith("_config"))]
    if rest:
        out.append(Change(ChangeKind.OTHER, f"config.json fields {_names(rest)} changed", path, rest[0]))
    return out


def weight_changes(
    old: Mapping[str, tuple[str, Path]], new: Mapping[str, tuple[str, Path]], *, root: Path
) -> list[Change]:
    """Tensors added, removed or with other content (dtype, shape or bytes), as one Change."""
    changed = sorted(k for k in old.keys() & new.keys() if old[k][0] != new[k][0])
    added = sorted(new.keys() - old.keys())
    removed = sorted(old.keys() - new.keys())
    if not (changed or added or removed):
        return []
    parts = []
    if changed:
        parts.append(f"{len(changed)} of {len(old.keys() & new.keys())} tensors differ ({_names(changed)})")
    if added:
        parts.append(f"{len(added)} added ({_names(added)})")
    if removed:
        parts.append(f"{len(removed)} removed ({_names(removed)})")
    first = (changed or added or removed)[0]
    where = (new.get(first) or old[first])[1]
    try:
        rel = where.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        rel = where.name
    return [Change(ChangeKind.WEIGHTS, "; ".join(parts), rel, first)]


def tokenizer_changes(old_root: Path, new_root: Path) -> list[Change]:
    """The tokenizer package checksum differs (one Change naming the files that differ)."""
    old_sum, new_sum = tokenizer_checksum(old_root), tokenizer_checksum(new_root)
    if old_sum == new_sum:
        return []
    rels = [f"model/{n}" for n in TOKENIZER_FILES]
    a = hash_files(old_root, [r for r in rels if (old_root / r).is_file()])
    b = hash_files(new_root, [r for r in rels if (new_root / r).is_file()])
    files = sorted(r for r in a.keys() | b.keys() if a.get(r) != b.get(r))
    return [
        Change(
            ChangeKind.TOKENIZER,
            f"tokenizer checksum {old_sum[:19]}… -> {new_sum[:19]}… ({_names(files)})",
            files[0] if files else "model/tokenizer.json",
        )
    ]


def _listed(root: Path) -> dict[str, tuple[int, str]]:
    """(size, sha256) of each well-formed ``files`` entry of a release's manifest ({} if unreadable)."""
    try:
        files = read_manifest(root).get("files")
    except ReleaseError:
        return {}
    if not isinstance(files, dict):
        return {}
    return {
        rel: (e["size"], e["sha256"])
        for rel, e in files.items()
        if isinstance(e, dict) and isinstance(e.get("size"), int) and isinstance(e.get("sha256"), str)
    }


def _file_hashes(root: Path, exclude: set[str]) -> dict[str, str]:
    """SHA-256 of each release file; big files of the listed size take the manifest's hash."""
    listed = _listed(root)
    out: dict[str, str] = {}
    to_hash = []
    for rel in release_files(root):
        if rel in exclude:
            continue
        size = (root / rel).stat().st_size
        entry = listed.get(rel)
        if entry is not None and size >= TRUST_MANIFEST_FROM and entry[0] == size:
            out[rel] = entry[1]
        else:
            to_hash.append(rel)
    out.update(hash_files(root, to_hash))
    return out


def file_changes(
    old_root: Path,
    new_root: Path,
    *,
    exclude: Iterable[str] = (),
    kind: ChangeKind = ChangeKind.OTHER,
    only: Iterable[str] | None = None,
) -> list[Change]:
    """Release files added, removed or changed (only ``only`` if given, never ``exclude``), as one Change."""
    skip = set(exclude) | {MANIFEST}
    keep = None if only is None else set(only)
    a = {r: h for r, h in _file_hashes(old_root, skip).items() if keep is None or r in keep}
    b = {r: h for r, h in _file_hashes(new_root, skip).items() if keep is None or r in keep}
    changed = sorted(r for r in a.keys() | b.keys() if a.get(r) != b.get(r))
    if not changed:
        return []
    return [Change(kind, f"{len(changed)} file(s) differ: {_names(changed)}", changed[0])]


def _preprocessing_files(root: Path, weights: set[str]) -> set[str]:
    model = root / "model"
    found = {f"model/{p.name}" for g in PREPROCESSING_GLOBS for p in model.glob(g) if p.is_file()}
    return found - weights


def diff_releases(old_root: Path, new_root: Path) -> list[Change]:
    """Every kind of change from ``old_root`` to ``new_root`` (see the module docstring).

    Raises ReleaseError when a model directory, config.json or the weights cannot be read.

    Example:
        >>> [c.kind.value for c in diff_releases(Path("v1.0.0"), Path("v1.1.0"))]  # doctest: +SKIP
        ['weights']
    """
    old_model, new_model = old_root / "model", new_root / "model"
    changes = architecture_changes(read_json(old_model / "config.json"), read_json(new_model / "config.json"))
    changes += weight_changes(tensor_hashes(old_model), tensor_hashes(new_model), root=new_root)
    changes += tokenizer_changes(old_root, new_root)
    weights = {"model/model.safetensors.index.json"}
    for root in (old_root, new_root):
        weights |= {f.relative_to(root).as_posix() for f in weight_files(root / "model")}
    preprocessing = _preprocessing_files(old_root, weights) | _preprocessing_files(new_root, weights)
    changes += file_changes(old_root, new_root, exclude=weights, kind=ChangeKind.PREPROCESSING, only=preprocessing)
    handled = weights | preprocessing | {"model/config.json", *(f"model/{n}" for n in TOKENIZER_FILES)}
    changes += file_changes(old_root, new_root, exclude=handled)
    return changes


def required_bump(changes: Iterable[Change]) -> Bump:
    """The largest bump any change requires (NONE when nothing changed)."""
    return max((c.bump for c in changes), default=Bump.NONE)
