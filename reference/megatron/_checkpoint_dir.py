"""Find a Megatron checkpoint on disk: tracker, iteration directory, rank directories."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ..converter._model import Layout
from ..errors import LayoutError, MalformedFileError

__all__ = ["CheckpointDir", "find_checkpoint", "rank_dir_name", "TRACKER", "RANK_FILE"]

TRACKER: Final = "latest_checkpointed_iteration.txt"
RANK_FILE: Final = "model_optim_rng.pt"
_RANK_DIR: Final = re.compile(r"mp_rank_(\d{2})(?:_(\d{3}))?(?:_(\d{3}))?\Z")
_PP_DIR: Final = re.compile(r"pp_rank_(\d{3})\Z")
_ITER_DIR: Final = re.compile(r"iter_(\d{7,})\Z")


@dataclass(frozen=True)
class CheckpointDir:
    """A resolved iteration directory."""

    root: Path
    iter_dir: Path
    iteration: int | None  # None for "release"
    format: str  # "torch" (one model_optim_rng.pt per rank) or "torch_dist"
    rank_dirs: dict[tuple[int, ...], Path]  # numbers parsed from the names, not yet interpreted

    @property
    def arguments_json(self) -> Path | None:
        for candidate in (self.iter_dir / "arguments.json", self.root / "arguments.json"):
            if candidate.is_file():
                return candidate
        return None


def _read_tracker(path: Path) -> int | None:
    text = path.read_text(encoding="utf-8", errors="replace").strip()
    if text == "release":
        return None
    if not (text.isascii() and text.isdigit()):  # "²".isdigit() is True, int("²") fails
        raise MalformedFileError(
            f"tracker holds {text[:40]!r}, expected an iteration number or 'release'",
            path=path,
            fix="write the iteration number of the checkpoint to load",
        )
    return int(text)


def _iter_dir(root: Path, iteration: int | None) -> Path:
    return root / ("release" if iteration is None else f"iter_{iteration:07d}")


def find_checkpoint(path: Path) -> CheckpointDir:
    """Resolve ``path`` (a checkpoint root, an iteration directory, or a release's root, whose
    ``checkpoint/`` it takes) to its iteration.

    The tracker is read at the root (Megatron) or inside an iteration directory (as some
    documentation draws it).
    """
    if not path.is_dir():
        raise LayoutError("not a directory", path=path, fix="pass a Megatron checkpoint directory")
    tracker = path / TRACKER
    if tracker.is_file():
        root, iteration = path, _read_tracker(tracker)
        iter_dir = _iter_dir(root, iteration)
        if not iter_dir.is_dir():
            raise LayoutError(
                f"the tracker names {iter_dir.name}, which does not exist",
                path=tracker,
                fix=f"restore {iter_dir.name}/ or correct the tracker",
            )
    elif _is_iteration(path):
        root, iter_dir = path.parent, path
        m = _ITER_DIR.match(path.name)
        iteration = int(m.group(1)) if m else None
    elif (path / "release.json").is_file() and (path / "checkpoint").is_dir():
        return find_checkpoint(path / "checkpoint")  # a release's root: its training checkpoint
    else:
        inner = sorted(p for p in path.iterdir() if p.is_dir() and (p / TRACKER).is_file())
        if not inner:
            raise LayoutError(
                f"no {TRACKER} and no rank directories",
                path=path,
                fix="pass the checkpoint root (with the tracker) or an iter_*/ directory",
            )
        # the tracker drawn inside iter_*/: take the newest it names
        root = path
        iteration = max((_read_tracker(p / TRACKER) for p in inner), key=lambda i: -1 if i is None else i)
        iter_dir = _iter_dir(root, iteration)
        if not iter_dir.is_dir():
            raise LayoutError(f"the tracker names {iter_dir.name}, which does not exist", path=inner[-1] / TRACKER)
    fmt = "torch_dist" if (iter_dir / "metadata.json").is_file() else "torch"
    rank_dirs = _rank_dirs(iter_dir) if fmt == "torch" else {}
    if fmt == "torch" and not rank_dirs:
        raise LayoutError("no mp_rank_* directories", path=iter_dir, fix="pass a complete iteration directory")
    return CheckpointDir(root, iter_dir, iteration, fmt, rank_dirs)


def _is_iteration(path: Path) -> bool:
    return (path / "metadata.json").is_file() or any(
        _RANK_DIR.match(p.name) or _PP_DIR.match(p.name) for p in path.iterdir() if p.is_dir()
    )


def _rank_dirs(iter_dir: Path) -> dict[tuple[int, ...], Path]:
    found: dict[tuple[int, ...], Path] = {}
    for p in sorted(iter_dir.iterdir()):
        if not p.is_dir():
            continue
        m = _RANK_DIR.match(p.name)
        if m:
            found[tuple(int(g) for g in m.groups() if g is not None)] = p
            continue
        pm = _PP_DIR.match(p.name)
        if pm:  # pp_rank_PPP/mp_rank_TT[_EEE]
            for q in sorted(p.iterdir()):
                m = _RANK_DIR.match(q.name) if q.is_dir() else None
                if m:
                    tp, *rest = (int(g) for g in m.groups() if g is not None)
                    if len(rest) > 1:
                        raise LayoutError("rank directory has too many indices", path=q)
                    found[(tp, int(pm.group(1)), *rest, -1)] = q  # -1 marks "pp explicit"
    return found


def rank_dir_name(tp: int, pp: int, ep: int, layout: Layout) -> str:
    """Megatron's directory name for a rank (``get_checkpoint_name``)."""
    name = f"mp_rank_{tp:02d}"
    if layout.pp > 1:
        name += f"_{pp:03d}"
    if layout.ep > 1:
        name += f"_{ep:03d}"
    return name


def interpret_rank_dirs(ckpt: CheckpointDir, layout: Layout) -> dict[tuple[int, int, int], Path]:
    """Map every rank directory to (tp, pp, ep); a missing or extra rank is an error naming it."""
    ranks: dict[tuple[int, int, int], Path] = {}
    for numbers, path in ckpt.rank_dirs.items():
        if numbers and numbers[-1] == -1:  # pp_rank_PPP/mp_rank_TT[_EEE]
            tp, pp, *rest = numbers[:-1]
            ep = rest[0] if rest else 0
        elif len(numbers) == 3:
            tp, pp, ep = numbers
        elif len(numbers) == 2:
            if layout.pp > 1 and layout.ep > 1:
                raise LayoutError(
                    f"{path.name} has two indices but the args say {layout.describe()}",
                    path=path,
                    fix="name rank directories mp_rank_TT_PPP_EEE",
                )
            tp, pp, ep = (numbers[0], numbers[1], 0) if layout.ep == 1 else (numbers[0], 0, numbers[1])
        else:
            tp, pp, ep = numbers[0], 0, 0
        if (tp, pp, ep) in ranks:
            raise LayoutError(f"rank TP={tp} PP={pp} EP={ep} appears twice", path=path)
        ranks[(tp, pp, ep)] = path
    expected = {(t, p, e) for t in range(layout.tp) for p in range(layout.pp) for e in range(layout.ep)}
    missing = sorted(expected - ranks.keys())
    extra = sorted(ranks.keys() - expected)
    if missing:
        names = ", ".join(rank_dir_name(*r, layout) for r in missing)
        raise LayoutError(
            f"missing rank directories {names} for {layout.describe()}",
            path=ckpt.iter_dir,
            fix="copy every rank of the checkpoint",
        )
    if extra:
        names = ", ".join(ranks[r].name for r in extra)
        raise LayoutError(
            f"unexpected rank directories {names} for {layout.describe()}",
            path=ckpt.iter_dir,
            fix="remove ranks that do not belong to this run, or correct the recorded parallel sizes",
        )
    for d in ranks.values():
        if not (d / RANK_FILE).is_file():
            raise LayoutError(f"missing {RANK_FILE}", path=d, fix="copy every rank of the checkpoint")
    return ranks


def describe_checkpoint(src: Any) -> dict[str, Any]:
    """What ``inspect`` says of a Megatron source (either format): format, naming dialects,
    iteration, checkpoint version, layout and where its args came from."""
    return {
        "format": src.format,
        "dialects": sorted(src.dialects),
        "iteration": "release" if src.iteration is None else src.iteration,
        "checkpoint_version": src.checkpoint_version,
        "layout": src.layout.describe(),
        "args_from": str(src.args_file),
    }
