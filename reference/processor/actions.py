"""Actions: named actions as their own tokens; continuous vectors as normalised, uniformly binned tokens.

Continuous encoding, per dimension ``d`` of a dataset key's ``norm_stats`` (``mask[d]`` true):

- ``q01_q99``: ``v = 2 (x - q01) / (q99 - q01) - 1``;  ``mean_std``: ``v = (x - mean) / std``.
  Dimensions with ``mask[d]`` false pass through (``v = x``; e.g. a gripper already in [-1, 1]).
- ``v`` is clipped to ``bin_range = [lo, hi]``; bin ``b = min(floor((v - lo) / w), n - 1)``,
  ``w = (hi - lo) / n``; token ``action_token_offset + b``, dimensions in order, time steps in order.
- Decoding maps bin ``b`` to its centre ``lo + (b + 1/2) w`` and inverts the normalisation, so
  the error is at most half a bin (``w / 2`` in normalised units) for values inside the range.

The dataset key (``unnorm_key``) is required when ``norm_stats`` has several; it is never guessed.
A sequence that is not whole bins raises :class:`~.errors.ActionDecodeError`; nothing decodes to zeros.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .config import ActionConfig, NormStats
from .errors import ActionDecodeError, ItemError

__all__ = [
    "Action",
    "ActionVector",
    "select_stats",
    "action_values",
    "normalize",
    "unnormalize",
    "to_bins",
    "bin_centers",
    "encode_actions",
    "decode_action_tokens",
]


class Action(str, enum.Enum):
    """A named driving action; its token is the ``action`` template filled with the value."""

    TURN_LEFT = "turn_left"
    TURN_RIGHT = "turn_right"
    GO_STRAIGHT = "go_straight"
    STOP = "stop"
    SLOW_DOWN = "slow_down"
    SPEED_UP = "speed_up"
    CHANGE_LANE_LEFT = "change_lane_left"
    CHANGE_LANE_RIGHT = "change_lane_right"


@dataclass(frozen=True, eq=False)
class ActionVector:
    """A continuous action ``[D]`` or an action chunk ``[T, D]`` and its dataset key.

    Attributes:
        values: Numbers in the dataset's units (list, numpy array or tensor).
        key: The ``norm_stats`` dataset key; required when the config has several.

    Example:
        >>> ActionVector([0.1, -0.5, 1.0], key="nuplan")  # doctest: +SKIP
    """

    values: Any
    key: str | None = None


def select_stats(cfg: ActionConfig, key: str | None, *, decoding: bool = False) -> NormStats:
    """The statistics of ``key``; the only key when ``key`` is None and there is exactly one.

    Raises:
        ItemError: (encoding) or ActionDecodeError (decoding): key missing with several keys, or unknown.
    """
    error: type[ItemError] | type[ActionDecodeError] = ActionDecodeError if decoding else ItemError
    keys = sorted(cfg.norm_stats)
    if key is None:
        if len(keys) == 1:
            return cfg.norm_stats[keys[0]]
        what = "unnorm_key" if decoding else "ActionVector.key"
        raise error(
            f"{what} is required: norm_stats has {len(keys)} dataset keys {keys} and none is assumed",
            fix=f"pass the dataset key the model was trained or fine-tuned on ({what}=...)",
        )
    if key not in cfg.norm_stats:
        raise error(f"dataset key {key!r} is not in norm_stats; known keys: {keys}", fix="pass one of the known keys")
    return cfg.norm_stats[key]


def action_values(values: Any, stats: NormStats) -> np.ndarray:
    """``[T, D]`` float64 from ``[D]`` or ``[T, D]`` values.

    Raises:
        ItemError: the wrong dimension for the key, another shape, or non-finite values.
    """
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        x = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ItemError(f"action values are not numbers ({e})", fix="pass a list or array of floats") from e
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] != stats.dim:
        raise ItemError(
            f"action values have shape {tuple(np.shape(values))}, expected [{stats.dim}] or [T, {stats.dim}] "
            f"for dataset key {stats.key!r}",
            fix="pass one value per action dimension of that dataset",
        )
    if not np.isfinite(x).all():
        raise ItemError("action values contain NaN or infinity", fix="clean the action before encoding it")
    return x


def normalize(x: np.ndarray, stats: NormStats, cfg: ActionConfig) -> np.ndarray:
    """Dataset units -> normalised units (module docstring), unclipped."""
    mask = np.asarray(stats.mask)
    if cfg.normalization == "q01_q99":
        low, high = np.asarray(stats.array("q01")), np.asarray(stats.array("q99"))
        scaled = 2.0 * (x - low) / np.where(mask, high - low, 1.0) - 1.0
    else:
        mean, std = np.asarray(stats.array("mean")), np.asarray(stats.array("std"))
        scaled = (x - mean) / np.where(mask, std, 1.0)
    return np.where(mask, scaled, x)


def unnormalize(v: np.ndarray, stats: NormStats, cfg: ActionConfig) -> np.ndarray:
    """Normalised units -> dataset units (the inverse of :func:`normalize`)."""
    mask = np.asarray(stats.mask)
    if cfg.normalization == "q01_q99":
        low, high = np.asarray(stats.array("q01")), np.asarray(stats.array("q99"))
        scaled = (v + 1.0) / 2.0 * (high - low) + low
    else:
        scaled = v * np.asarray(stats.array("std")) + np.asarray(stats.array("mean"))
    return np.where(mask, scaled, v)


def to_bins(v: np.ndarray, cfg: ActionConfig) -> np.ndarray:
    """Bin indices (int64) of normalised values, clipped to ``bin_range``.

    >>> from types import SimpleNamespace as N
    >>> to_bins(np.array([-1.0, -0.99, 0.0, 0.99, 1.0, 7.0]), N(n_bins=4, bin_range=(-1.0, 1.0))).tolist()
    [0, 0, 2, 3, 3, 3]
    """
    lo, hi = cfg.bin_range
    scaled = (np.clip(v, lo, hi) - lo) / (hi - lo) * cfg.n_bins
    return np.minimum(np.floor(scaled).astype(np.int64), cfg.n_bins - 1)


def bin_centers(cfg: ActionConfig) -> np.ndarray:
    """The ``n_bins`` centres in normalised units: ``lo + (b + 1/2) (hi - lo) / n``."""
    lo, hi = cfg.bin_range
    return lo + (np.arange(cfg.n_bins, dtype=np.float64) + 0.5) * (hi - lo) / cfg.n_bins


def encode_actions(vector: ActionVector, cfg: ActionConfig) -> np.ndarray:
    """Bins ``[T * D]`` of an action vector or chunk, time-major.

    Raises:
        ItemError: unknown or missing dataset key, wrong shape, or non-finite values.
    """
    stats = select_stats(cfg, vector.key)
    return to_bins(normalize(action_values(vector.values, stats), stats, cfg), cfg).reshape(-1)


def decode_action_tokens(
    ids: Sequence[int],
    cfg: ActionConfig,
    *,
    offset: int,
    start: int,
    end: int,
    unnorm_key: str | None,
    describe: Callable[[int], str],
) -> np.ndarray:
    """Actions ``[T, D]`` (dataset units) from action-bin token ids, with or without the delimiters.

    Raises:
        ActionDecodeError: a token that is not an action bin (naming its position and id), unbalanced
            delimiters, no bins, bins that do not fill whole actions, or a missing/unknown key.
    """
    stats = select_stats(cfg, unnorm_key, decoding=True)
    seq = [int(t) for t in ids]
    first = 0
    if seq and seq[0] == start:
        if seq[-1] != end:
            raise ActionDecodeError(
                f"the sequence opens with {describe(start)} but ends with {describe(seq[-1])}",
                fix="pass the whole action block, up to its end delimiter (generation may have stopped early)",
            )
        seq, first = seq[1:-1], 1
    if not seq:
        raise ActionDecodeError("no action tokens to decode", fix="check that the model generated an action block")
    last = offset + cfg.n_bins
    for pos, t in enumerate(seq, start=first):
        if not offset <= t < last:
            raise ActionDecodeError(
                f"position {pos}: token {t} ({describe(t)}) is not an action bin (ids {offset}..{last - 1})",
                fix="decode only the action block; constrain generation to action-bin tokens inside it",
            )
    if len(seq) % stats.dim:
        raise ActionDecodeError(
            f"{len(seq)} action bins do not fill whole {stats.dim}-dimensional actions of dataset key {stats.key!r}",
            fix="check unnorm_key (its dimension) and that generation was not cut short",
        )
    bins = np.asarray(seq, dtype=np.int64) - offset
    return unnormalize(bin_centers(cfg)[bins].reshape(-1, stats.dim), stats, cfg)
