"""Percentile-bootstrap 95% confidence intervals over seeds.

Method (stated here once; ``docs/comparisons.md`` repeats it for readers of tables):

* The unit of resampling is the **seed**: a method's ``n`` per-seed values are resampled with
  replacement ``resamples`` times (default 10,000), the statistic (the mean) is computed on each
  resample, and the interval is the 2.5th and 97.5th percentiles of those statistics (the
  *percentile* bootstrap, Efron & Tibshirani 1993, ch. 13).
* A **paired** interval (a method against the reference) resamples the *same* seed indices for
  both: seed ``s`` of the method is always compared with seed ``s`` of the reference, so
  whatever the two runs share through their seed (initial point, minibatch order) cancels.
* Resampling draws from ``numpy.random.default_rng(seed)`` with a fixed ``seed`` (0 unless
  given), so a report is reproducible to the last digit.
* With one seed there is nothing to resample: the interval is *degenerate* and both bounds are
  ``None`` (the mean is still reported). With no values, the mean is ``None`` too.

With few seeds (3-5) the percentile bootstrap under-covers (its intervals are too narrow):
read a 3-seed interval as a lower bound on the uncertainty, not as a 95% guarantee.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
RESAMPLES = 10_000

Statistic = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``(a, b) -> values``: ``a`` and ``b`` of shape ``(resamples, n)``; returns ``(resamples,)``."""


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap confidence interval (``None``: undefined)."""

    mean: float | None
    ci_low: float | None
    ci_high: float | None

    @property
    def width(self) -> float | None:
        """``ci_high - ci_low``, or ``None`` when the interval is degenerate."""
        if self.ci_low is None or self.ci_high is None:
            return None
        return self.ci_high - self.ci_low

    def to_json(self) -> dict[str, float | None]:
        return {"mean": self.mean, "ci_low": self.ci_low, "ci_high": self.ci_high}


EMPTY = Interval(None, None, None)


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    return array[np.isfinite(array)]


def _clean(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _percentiles(stats: np.ndarray, level: float) -> tuple[float | None, float | None]:
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return None, None
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(stats, [tail, 100.0 - tail])
    return float(low), float(high)


def _check(level: float, resamples: int) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")


def bootstrap_mean(
    values: Sequence[float] | np.ndarray,
    *,
    level: float = LEVEL,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Interval:
    """Mean of ``values`` (shape ``(n,)``, one per seed; non-finite ones dropped) with its
    percentile-bootstrap interval. ``n == 1``: degenerate (bounds ``None``); ``n == 0``:
    :data:`EMPTY`."""
    _check(level, resamples)
    x = _finite(values)
    if x.size == 0:
        return EMPTY
    mean = float(x.mean())
    if x.size == 1:
        return Interval(mean, None, None)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(resamples, x.size))
    low, high = _percentiles(x[idx].mean(axis=1), level)
    return Interval(mean, low, high)


def ratio_of_means(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``mean(a) / mean(b)`` along the last axis (``inf``/``nan`` where ``mean(b) == 0``)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out: np.ndarray = a.mean(axis=-1) / b.mean(axis=-1)
    return out


def paired_bootstrap(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    statistic: Statistic = ratio_of_means,
    *,
    level: float = LEVEL,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Interval:
    """``statistic(a, b)`` with a paired bootstrap interval: ``a[i]`` and ``b[i]`` belong to
    the same seed and are always resampled together.

    Args:
        a, b: shape ``(n,)`` each, aligned by seed; pairs with a non-finite member are dropped.
        statistic: vectorized over resamples (default: ratio of means, ``mean(a) / mean(b)``).

    Returns:
        The statistic on the data and its percentile interval; degenerate (bounds ``None``)
        for one pair, :data:`EMPTY` for none.
    """
    _check(level, resamples)
    x = np.asarray(a, dtype=np.float64).reshape(-1)
    y = np.asarray(b, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"paired values need equal lengths, got {x.size} and {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size == 0:
        return EMPTY
    point = _clean(float(statistic(x[None, :], y[None, :])[0]))
    if x.size == 1:
        return Interval(point, None, None)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(resamples, x.size))
    low, high = _percentiles(statistic(x[idx], y[idx]), level)
    return Interval(point, low, high)


def unpaired_bootstrap(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    statistic: Statistic = ratio_of_means,
    *,
    level: float = LEVEL,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Interval:
    """Like :func:`paired_bootstrap` but ``a`` and ``b`` are resampled independently (for
    runs that share nothing through their seeds). Shown for comparison; reports use the
    paired form."""
    _check(level, resamples)
    x, y = _finite(a), _finite(b)
    if x.size == 0 or y.size == 0:
        return EMPTY
    point = _clean(float(statistic(x[None, :], y[None, :])[0]))
    if x.size == 1 and y.size == 1:
        return Interval(point, None, None)
    rng = np.random.default_rng(seed)
    ix = rng.integers(0, x.size, size=(resamples, x.size))
    iy = rng.integers(0, y.size, size=(resamples, y.size))
    low, high = _percentiles(statistic(x[ix], y[iy]), level)
    return Interval(point, low, high)
