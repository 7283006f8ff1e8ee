"""The simple gradient noise scale ``B_simple = tr(Sigma) / |G|^2`` (McCandlish, Kaplan,
Amodei et al. 2018, "An Empirical Model of Large-Batch Training", section 2.2 and appendix A).

``G`` is the true gradient and ``Sigma`` the per-example gradient covariance. A minibatch of
``b`` i.i.d. examples has gradient ``G_b`` with ``E|G_b|^2 = |G|^2 + tr(Sigma) / b``: linear in
``1 / b``. From mean squared norms at two sizes ``b_small < b_big`` appendix A's unbiased
estimators are::

    |G|^2      ~ (b_big |G_big|^2 - b_small |G_small|^2) / (b_big - b_small)
    tr(Sigma)  ~ (|G_small|^2 - |G_big|^2) / (1 / b_small - 1 / b_big)

that is, the line through the two points ``(1/b, mean |G_b|^2)``. With more than two sizes
:func:`fit_noise_scale` fits that line by least squares (the same estimators for two sizes).
As in the paper, the squared norms are averaged over many draws *before* the ratio is taken
(the ratio of two noisy estimates is biased; averaging first keeps the bias small).

Reading: training at batch ``B`` well below ``B_simple`` is noise-dominated, so larger
batches (data parallelism) cut the steps almost linearly; well above it, extra examples
per step buy little (the critical batch size ``B_crit ~ B_simple``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NoiseScale:
    """One estimate of the noise scale.

    Attributes:
        sizes: the batch sizes measured, increasing.
        mean_sq_norms: ``mean |G_b|^2`` per size (same order), over ``draws`` draws each.
        draws: the draws per size.
        grad_sq: the estimate of ``|G|^2`` (may come out ``<= 0`` when noise dominates).
        trace_sigma: the estimate of ``tr(Sigma)`` (per-example covariance trace).
        b_simple: ``trace_sigma / grad_sq``; ``inf`` when ``grad_sq <= 0`` (unresolved: the
            noise swamps the mean gradient at these sizes and draws).
        ci_low / ci_high: 95% percentile-bootstrap interval of ``b_simple`` over the draws
            (``None`` when not computed).
    """

    sizes: tuple[int, ...]
    mean_sq_norms: tuple[float, ...]
    draws: int
    grad_sq: float
    trace_sigma: float
    b_simple: float
    ci_low: float | None = None
    ci_high: float | None = None


def _line(inv_sizes: np.ndarray, means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares intercept and slope of ``means ~ a + s * inv_sizes`` along the last
    axis (``means``: ``(..., k)``); returns ``(a, s)`` of shape ``(...)``."""
    x = inv_sizes - inv_sizes.mean()
    slope = (means * x).sum(axis=-1) / (x * x).sum()
    intercept = means.mean(axis=-1) - slope * inv_sizes.mean()
    return intercept, slope


def _ratio(trace: np.ndarray, grad_sq: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(grad_sq > 0, trace / grad_sq, np.inf)


def fit_noise_scale(
    sq_norms: Mapping[int, Sequence[float] | np.ndarray],
    *,
    resamples: int = 2000,
    seed: int = 0,
) -> NoiseScale:
    """Estimate ``B_simple`` from squared minibatch-gradient norms.

    Args:
        sq_norms: batch size -> ``|G_b|^2`` of independent draws at that size (shape
            ``(draws,)``); at least two distinct sizes, each with the same number of draws.
        resamples: bootstrap resamples of the draws for the interval (0: no interval).
        seed: of the bootstrap's ``numpy.random.Generator``.

    Raises:
        ValueError: fewer than two sizes, a size < 1, or unequal / empty draws.
    """
    sizes = sorted(sq_norms)
    if len(sizes) < 2 or sizes[0] < 1:
        raise ValueError(f"need at least two batch sizes >= 1, got {sizes}")
    table = np.array([np.asarray(sq_norms[b], dtype=np.float64) for b in sizes])
    if table.ndim != 2 or table.shape[1] < 1:
        raise ValueError("every batch size needs the same number (>= 1) of draws")
    inv = 1.0 / np.array(sizes, dtype=np.float64)
    means = table.mean(axis=1)
    grad_sq, trace = _line(inv, means)
    b_simple = float(_ratio(np.asarray(trace), np.asarray(grad_sq)))
    low = high = None
    if resamples > 0 and table.shape[1] > 1:
        rng = np.random.default_rng(seed)
        draws = table.shape[1]
        idx = rng.integers(0, draws, size=(resamples, len(sizes), draws))
        boot = np.take_along_axis(table[None, :, :], idx, axis=2).mean(axis=2)
        g_b, t_b = _line(inv, boot)
        ratios = _ratio(t_b, g_b)
        # no interpolation between order statistics: an unresolved (inf) resample stays inf
        low = float(np.percentile(ratios, 2.5, method="lower"))
        high = float(np.percentile(ratios, 97.5, method="higher"))
    return NoiseScale(
        sizes=tuple(int(b) for b in sizes),
        mean_sq_norms=tuple(float(m) for m in means),
        draws=int(table.shape[1]),
        grad_sq=float(grad_sq),
        trace_sigma=float(trace),
        b_simple=b_simple,
        ci_low=low,
        ci_high=high,
    )


def step_saving(batch_size: int, b_simple: float) -> float:
    """Fraction of the steps that doubling ``batch_size`` saves, as predicted by the
    steps-batch trade-off ``S(B) = S_min (1 + B_noise / B)`` (McCandlish et al. 2018, section
    2) with ``B_noise ~ B_simple``: 1/2 deep in the noise-dominated regime, 0 when saturated."""
    ratio = b_simple / batch_size
    return 1.0 - (1.0 + ratio / 2.0) / (1.0 + ratio)


def reading(batch_size: int, scale: NoiseScale) -> str:
    """One line: where the task's batch size sits against ``B_simple`` (below it: data
    parallelism pays; near it: the knee; above it: it saturates)."""
    if not math.isfinite(scale.b_simple):
        return (
            f"|G|^2 not resolved above the noise at sizes {list(scale.sizes)}: B_simple is"
            f" beyond what these sizes measure, so batch {batch_size} is noise-dominated and"
            " data parallelism pays (measure at larger sizes for a number)"
        )
    if scale.b_simple <= 0:
        return "no measurable gradient noise: larger batches do not help (deterministic regime)"
    factor = scale.b_simple / batch_size
    saving = f"doubling the batch would save ~{100 * step_saving(batch_size, scale.b_simple):.0f}%"
    if factor >= 2:
        return (
            f"batch {batch_size} is below B_simple (x{factor:.3g}): noise-dominated, data"
            f" parallelism pays ({saving} of the steps)"
        )
    if factor >= 0.5:
        return (
            f"batch {batch_size} is near B_simple (x{factor:.3g}): at the knee, data"
            f" parallelism still pays but with diminishing returns ({saving} of the steps)"
        )
    return (
        f"batch {batch_size} is above B_simple (x{1 / factor:.3g}): data parallelism"
        f" saturates ({saving} of the steps)"
    )
