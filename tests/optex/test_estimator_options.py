"""Issue 19's estimator options: forward-validated fit, the released ("reference") settings,
noise measured from the round's spread, distances on a coordinate subset, posterior
variance; each validated at construction."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from optkit_optex.config import EstimatorConfig
from optkit_optex.estimator import KernelGradientEstimator, round_spread
from optkit_optex.hyper import (
    NOISE_GRID,
    SCALE_GRID,
    fit_forward,
    forward_errors,
    median_distance,
    relative_noise,
)
from optkit_optex.kernels import evaluate_sq
from optkit_optex.rounds import group_counts, group_mean, within_noise

from optkit.errors import ConfigError


def _trajectory(seed: int, n: int = 14, d: int = 5, m: int = 6, noise: float = 0.05):  # type: ignore[no-untyped-def]
    gen = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.randn(n, d, generator=gen, dtype=torch.float64).cumsum(0)
    ys = torch.sin(2 * x) @ torch.randn(d, m, generator=gen, dtype=torch.float64)
    ys = ys + noise * torch.randn(n, m, generator=gen, dtype=torch.float64)
    return x, torch.cdist(x, x) ** 2, ys


def _brute_forward(sq, ys, hold, ls, noise):  # type: ignore[no-untyped-def]
    train = [i for i in range(sq.shape[0]) if i not in hold]
    kmat = evaluate_sq("matern52", sq[train][:, train], ls)
    kx = evaluate_sq("matern52", sq[hold][:, train], ls)
    eye = torch.eye(len(train), dtype=sq.dtype)
    pred = kx @ torch.linalg.solve(kmat + noise * eye, ys[train])
    return float(((pred - ys[hold]) ** 2).mean())


@pytest.mark.parametrize("seed", [0, 1])
def test_forward_errors_equal_a_brute_force_forward_prediction(seed: int) -> None:
    _, sq, ys = _trajectory(seed)
    hold = [11, 12, 13]
    scales = torch.tensor([0.4, 1.3], dtype=torch.float64)
    noises = torch.tensor([1e-4, 1e-2, 1.0], dtype=torch.float64)
    got = forward_errors(sq, ys, torch.tensor(hold), "matern52", scales, noises)
    for (li, ls), (ni, nz) in itertools.product(enumerate(scales), enumerate(noises)):
        want = _brute_forward(sq, ys, hold, float(ls), float(nz))
        assert math.isclose(float(got[li, ni]), want, rel_tol=1e-6), (ls, nz)


def test_fit_forward_picks_the_candidate_with_the_smallest_forward_error() -> None:
    _, sq, ys = _trajectory(3, noise=0.3)
    hold = torch.tensor([12, 13])
    hyper = fit_forward(sq, ys, hold, "matern52")
    assert hyper is not None
    med = median_distance(sq)
    assert med is not None
    best = min(
        itertools.product(SCALE_GRID, NOISE_GRID),
        key=lambda c: _brute_forward(sq, ys, [12, 13], c[0] * med, c[1]),
    )
    assert math.isclose(hyper.lengthscale, best[0] * med, rel_tol=1e-9)
    assert hyper.noise == best[1]


def test_forward_fit_holds_out_the_newest_rounds_ring_slots() -> None:
    est = KernelGradientEstimator(4, EstimatorConfig(history=5, fit="forward", fit_lag=0))
    gen = torch.Generator().manual_seed(0)
    for it in range(1, 3):
        est.begin(torch.zeros(4))
        pts = torch.randn(3, 4, generator=gen)
        est.append(pts, pts.sin(), iteration=it)
    context = est._context()
    assert context.holdout is not None
    assert context.holdout.tolist() == [3, 4, 0]  # 3 pairs, then 3 more wrapping the ring
    est.begin(torch.zeros(4))
    assert est.mode == "gp" and est.hyper is not None


def test_reference_fit_is_lengthscale_0_1_on_the_mean_point_norm_and_noise_1e_3() -> None:
    est = KernelGradientEstimator(3, EstimatorConfig(history=10, fit="reference"))
    pts = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 2.0], [1.0, 0.0, 0.0]])
    est.begin(pts[0])
    est.append(pts, torch.ones(3, 3), iteration=1)
    est.begin(pts[-1])
    hyper = est.hyper
    assert hyper is not None
    assert math.isclose(hyper.lengthscale, 0.1 * (5.0 + 2.0 + 1.0) / 3, rel_tol=1e-6)
    assert hyper.noise == 1e-3
    assert est.fitter.fits == 0  # nothing fitted


def test_round_spread_is_half_the_mean_squared_consecutive_difference() -> None:
    gc = torch.tensor([[0.0, 1.0], [2.0, 1.0], [2.0, 5.0]])
    assert float(round_spread(gc)) == pytest.approx(0.5 * (4 + 0 + 0 + 16) / 4)
    assert math.isnan(float(round_spread(gc[:1])))


def test_within_group_noise_measures_the_minibatch_variance_over_k() -> None:
    gen = torch.Generator().manual_seed(0)
    counts = group_counts(3, 4, 5)  # 3 points reached of 4: the last one gets 10 workers
    assert counts == [5, 5, 10]
    means = torch.randn(3, 2000, generator=gen)
    values = torch.cat(
        [means[i] + 2.0 * torch.randn(c, 2000, generator=gen) for i, c in enumerate(counts)]
    )
    got = within_noise(values, counts)
    assert got is not None
    inv = (1 / 5 + 1 / 5 + 1 / 10) / 3
    assert float(got) == pytest.approx(4.0 * inv, rel=0.05)
    torch.testing.assert_close(group_mean(values, counts)[2], values[10:].mean(0))
    assert within_noise(values[:3], [1, 1, 1]) is None


def test_spread_noise_estimate_sets_the_relative_noise_from_the_measured_variance() -> None:
    """Gradients: a smooth signal plus noise of variance 4 per coordinate; the estimator's
    measured noise (consecutive differences within each round) gives a relative noise near
    4 / signal power, where the LOO heuristic is free to pick anything on its grid."""
    d, gen = 64, torch.Generator().manual_seed(1)
    est = KernelGradientEstimator(
        d, EstimatorConfig(history=40, noise_estimate="spread", fit_lag=0, fit_coords=64)
    )
    x, measured = torch.zeros(d), []
    for it in range(1, 6):
        est.begin(x)
        pts = x + 0.01 * torch.randn(5, d, generator=gen).cumsum(0)
        grads = 3.0 + 2.0 * torch.randn(5, d, generator=gen)
        est.append(pts, grads, iteration=it)
        measured.append(float(round_spread(grads[:, est.coords])))
        x = pts[-1]
    est.begin(x)
    assert est.hyper is not None
    assert sum(measured) / 5 == pytest.approx(4.0, rel=0.15)
    want = relative_noise(sum(measured) / 5, est._ys_host[: est.size])
    assert est.hyper.noise == pytest.approx(want, rel=1e-9)
    assert 4.0 / 9.0 * 0.6 < est.hyper.noise < 4.0 / 9.0 * 1.6


def test_effective_dim_measures_distances_on_a_seeded_coordinate_subset() -> None:
    d, gen = 50, torch.Generator().manual_seed(2)
    est = KernelGradientEstimator(d, EstimatorConfig(history=8, effective_dim=7, seed=4))
    again = KernelGradientEstimator(d, EstimatorConfig(history=8, effective_dim=7, seed=4))
    assert est.dist_coords is not None and torch.equal(est.dist_coords, again.dist_coords)
    assert est.X.shape == (8, 7) and est.memory_bytes == 8 * (7 + 50) * 4
    pts = torch.randn(6, d, generator=gen)
    est.begin(pts[0])
    est.append(pts, pts.cos(), iteration=1)
    sub = pts[:, est.dist_coords].double()
    torch.testing.assert_close(est.sqdist[:6, :6], torch.cdist(sub, sub) ** 2, rtol=1e-4, atol=1e-4)
    est.begin(pts[-1])
    q = pts[2] + 0.1
    est.query(q)
    want = ((sub - q[est.dist_coords].double()) ** 2).sum(1)
    torch.testing.assert_close(est.queried_distances()[0, :6].double(), want, rtol=1e-4, atol=1e-4)


def test_posterior_variance_is_small_at_stored_points_and_one_far_away() -> None:
    d, gen = 6, torch.Generator().manual_seed(3)
    est = KernelGradientEstimator(
        d, EstimatorConfig(history=20, fit="fixed", lengthscale=1.0, noise=1e-6)
    )
    pts = 0.3 * torch.randn(8, d, generator=gen).cumsum(0)
    est.begin(pts[0])
    est.append(pts, pts.sin(), iteration=1)
    est.begin(pts[-1])
    est.query(pts[3])
    near = est.last_variance()
    est.query(pts[3] + 100.0)
    far = est.last_variance()
    assert near < 1e-3 and far == pytest.approx(1.0)
    var = torch.zeros(1)
    est.query_into(pts[3] + 100.0, torch.zeros(20), torch.zeros(d), var)
    assert float(var) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fit": "forwards"}, "fit must be one of 'heuristic', 'mll', 'fixed', 'forward'"),
        ({"effective_dim": 0}, "effective_dim must be an integer >= 1"),
        ({"effective_dim": 2.5}, "effective_dim must be an integer >= 1"),
        (
            {"effective_dim": 11},
            r"effective_dim = 11 is larger than the number of parameters \(10\)",
        ),
        ({"noise_estimate": "spread", "noise": 0.1}, "noise_estimate = 'spread' sets the noise"),
        ({"noise_estimate": "spread", "fit": "reference"}, "noise_estimate = 'spread'"),
        ({"noise_estimate": "measured"}, "noise_estimate must be 'fit' or 'spread'"),
        ({"fit": "reference", "lengthscale": 1.0}, "fit = 'reference' uses the released"),
    ],
)
def test_bad_estimator_options_are_config_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        KernelGradientEstimator(10, EstimatorConfig(history=5, **kwargs))  # type: ignore[arg-type]
