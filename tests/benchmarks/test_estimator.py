"""OptEx's kernel gradient estimator: one query mu(x), and one iteration's begin (fit +
solve) and append, on a filled history (T0 pairs, float32, CPU)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from optkit_optex.config import EstimatorConfig
from optkit_optex.estimator import KernelGradientEstimator

from .conftest import Size

pytestmark = pytest.mark.optex


def filled(size: Size) -> tuple[KernelGradientEstimator, torch.Tensor]:
    """An estimator whose history is full of pairs (x, 2x) along a random walk of rounds of
    N points; returns it, begun at the walk's next point, and that point."""
    d, n = size.dim, size.parallelism
    est = KernelGradientEstimator(d, EstimatorConfig(history=size.history))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(d, generator=gen)
    for it in range(size.history // n + 2):
        est.begin(x)
        points = x + 0.01 * torch.randn(n, d, generator=gen).cumsum(0)
        est.append(points, 2 * points, iteration=it)
        x = points[-1] + 0.01
    est.begin(x)
    return est, x


def test_query(size: Size, measure: Callable[[Callable[[], Any]], Any]) -> None:
    """One posterior-mean gradient mu(x): reads the T0 x d history once."""
    est, x = filled(size)
    q = x + 0.003
    mu = measure(lambda: est.query(q))
    assert mu.shape == (size.dim,) and bool(torch.isfinite(mu).all())
    # the stored gradients are 2x: the estimate at a nearby point beats predicting zero
    assert float((mu - 2 * q).norm()) < 0.5 * float((2 * q).norm())


def test_begin(size: Size, measure: Callable[[Callable[[], Any]], Any]) -> None:
    """An iteration's begin: anchor, hyperparameter fit (its schedule's default), solve."""
    est, x = filled(size)
    measure(lambda: est.begin(x))
    assert bool(torch.isfinite(est.query(x)).all())


def test_append(size: Size, measure: Callable[[Callable[[], Any]], Any]) -> None:
    """An iteration's append of N pairs none of which was queried (the worst case)."""
    est, x = filled(size)
    gen = torch.Generator().manual_seed(1)
    points = x + 0.01 * torch.randn(size.parallelism, size.dim, generator=gen).cumsum(0)
    iterations = iter(range(1000, 10**6))
    measure(lambda: est.append(points, 2 * points, iteration=next(iterations)))
    assert est.size == size.history
