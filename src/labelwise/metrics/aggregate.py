"""Summaries of per-sample (or per-run) metric values: mean ± std and bootstrap confidence intervals."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["bootstrap_ci", "bootstrap_interval", "empty_mask_note", "mean_std"]

_CHUNK_ELEMENTS = 1 << 24  # resample indices held at once by bootstrap_interval (bounded memory)


def _as_numpy(values: torch.Tensor | np.ndarray | Sequence[float]) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64).reshape(-1)


def mean_std(values: torch.Tensor | np.ndarray | Sequence[float], ddof: int = 1) -> tuple[float, float]:
    """Mean and standard deviation (``ddof=1``: sample std) of ``values`` (any shape, flattened), ignoring nan.

    Nan when no value is left (mean and std) or fewer than ``ddof + 1`` are (std)."""
    x = _as_numpy(values)
    x = x[~np.isnan(x)]
    mean = float(x.mean()) if x.size else math.nan
    std = float(x.std(ddof=ddof)) if x.size > ddof else math.nan
    return mean, std


def bootstrap_ci(
    values: torch.Tensor | np.ndarray | Sequence[float],
    statistic: Callable[..., np.ndarray] = np.mean,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval ``(low, high)`` of ``statistic`` over ``values`` (N,)
    (:func:`bootstrap_interval`).

    Nan values are dropped first. ``statistic`` is called as ``statistic(samples, axis=-1)`` on a
    (resamples, N) array (numpy's convention, like ``np.mean``/``np.median``). ``(nan, nan)`` for no
    values; a single value gives ``(value, value)``."""
    x = _as_numpy(values)
    x = x[~np.isnan(x)]
    return bootstrap_interval(lambda index: statistic(x[index], axis=-1), x.size, n_resamples, level, seed)


def bootstrap_interval(
    statistic: Callable[[np.ndarray], Any],
    n: int,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    chunk: int | None = None,
) -> tuple[float, float]:
    """The one percentile bootstrap: the ``level`` interval ``(low, high)`` of a statistic over ``n_resamples``
    resamples of ``n`` cases drawn with replacement.

    ``statistic(index)`` gets the case indices of several resamples, int64 ``(resamples, n)``, and returns the
    statistic of each ``(resamples,)``; resamples where it is nan (undefined there) are left out. Indices are drawn
    ``chunk`` resamples at a time (default: about 2**24 indices), all of a chunk at once; deterministic for
    ``seed`` (numpy's ``default_rng``), whatever the chunk. ``(nan, nan)`` for ``n = 0`` or when every resample is
    nan."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    if n == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    rows = chunk or max(1, _CHUNK_ELEMENTS // n)
    stats = np.concatenate(
        [
            np.asarray(
                statistic(rng.integers(0, n, size=(min(rows, n_resamples - start), n))), dtype=np.float64
            ).reshape(-1)
            for start in range(0, n_resamples, rows)
        ]
    )
    stats = stats[~np.isnan(stats)]
    if stats.size == 0:
        return math.nan, math.nan
    alpha = (1 - level) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return float(low), float(high)


def empty_mask_note(summary: dict[str, Any], n: int) -> str | None:
    """One line on the cases of :func:`labelwise.evaluation.segmentation.summarize_cases`'s ``summary`` (``n`` in all)
    whose HD95 and ASSD are undefined because a mask is empty, and how many cases their mean is over; None when there
    are none."""
    kinds = [
        (summary.get(key, 0), what)
        for key, what in (
            ("empty_prediction", "an empty prediction"),
            ("empty_reference", "an empty reference"),
            ("both_empty", "both masks empty"),
        )
    ]
    kinds = [(k, what) for k, what in kinds if k]
    if not kinds:
        return None
    total = sum(k for k, _ in kinds)
    verb = "case has" if total == 1 else "cases have"
    which = kinds[0][1] if len(kinds) == 1 else "an empty mask (" + ", ".join(f"{k} {what}" for k, what in kinds) + ")"
    counted = summary["count"]["hd95"]
    return (
        f"HD95/ASSD: {total} of {n} {verb} {which}; the distances are undefined there (nan, as MONAI's HD95 gives; "
        f"its ASSD gives inf with one mask empty) and their mean is over {counted} case{'' if counted == 1 else 's'}"
    )
