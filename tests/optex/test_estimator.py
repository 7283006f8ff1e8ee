"""The kernel gradient estimator: exactness against GPyTorch, distances, fallbacks, NaN."""

from __future__ import annotations

import math

import pytest
import torch
from optkit_optex.config import EstimatorConfig
from optkit_optex.estimator import KernelGradientEstimator
from optkit_optex.hyper import fit_heuristic, fit_mll, mds_embedding

from optkit.errors import DivergenceError


def _trajectory(d: int, steps: int, seed: int, offset: float = 0.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    start = offset + torch.randn(d, generator=gen, dtype=torch.float64)
    moves = 0.05 * torch.randn(steps, d, generator=gen, dtype=torch.float64)
    return start + moves.cumsum(0)


def _filled(
    points: torch.Tensor, grads: torch.Tensor, **options: object
) -> KernelGradientEstimator:
    est = KernelGradientEstimator(
        points.shape[1], EstimatorConfig(history=points.shape[0], **options), dtype=torch.float64
    )
    est.begin(points[0])
    est.append(points, grads, iteration=1)
    est.begin(points[-1] + 0.01)
    return est


def test_interpolates_stored_gradients_as_noise_goes_to_zero() -> None:
    pts = _trajectory(d=30, steps=8, seed=0)
    grads = torch.sin(3 * pts) + pts**2
    est = _filled(pts, grads, fit="fixed", lengthscale=0.3, noise=1e-12)
    for i in range(pts.shape[0]):
        torch.testing.assert_close(est.query(pts[i]), grads[i], rtol=1e-6, atol=1e-6)


@pytest.mark.optex
def test_matches_gpytorch_exact_gp_posterior_mean() -> None:
    """mu(x) equals the predictive mean of a GPyTorch ExactGP (one output per coordinate,
    shared ScaleKernel(Matern 5/2), Gaussian likelihood) with the same hyperparameters."""
    import gpytorch

    d, n, lengthscale, outputscale, noise = 6, 9, 0.4, 2.5, 1e-2
    pts = _trajectory(d=d, steps=n, seed=1).to(torch.float64)
    grads = torch.cos(2 * pts) * 3.0
    est = _filled(pts, grads, fit="fixed", lengthscale=lengthscale, noise=noise)
    query = pts[-1] + 0.03

    train_y = grads.T.contiguous()  # (d, n): d independent outputs

    class GP(gpytorch.models.ExactGP):  # type: ignore[misc, name-defined]
        def __init__(self, likelihood: gpytorch.likelihoods.GaussianLikelihood) -> None:
            super().__init__(pts, train_y, likelihood)
            self.covar = gpytorch.kernels.ScaleKernel(gpytorch.kernels.MaternKernel(nu=2.5))

        def forward(self, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
            mean = torch.zeros(d, x.shape[0], dtype=x.dtype)
            return gpytorch.distributions.MultivariateNormal(mean, self.covar(x).expand(d, -1, -1))

    likelihood = gpytorch.likelihoods.GaussianLikelihood(
        noise_constraint=gpytorch.constraints.GreaterThan(1e-10)
    ).to(torch.float64)
    model = GP(likelihood).to(torch.float64)
    model.covar.base_kernel.lengthscale = lengthscale
    model.covar.outputscale = outputscale
    likelihood.noise = noise * outputscale  # the estimator's noise is relative
    model.eval()
    likelihood.eval()
    with torch.no_grad(), gpytorch.settings.fast_pred_var(False):
        reference = model(query[None]).mean[:, 0]
    torch.testing.assert_close(est.query(query), reference, rtol=1e-6, atol=1e-8)


def test_anchored_distances_are_accurate_far_from_the_origin_in_float32() -> None:
    """Consecutive iterates 0.01 apart at |x| ~ 1e3 per coordinate: the anchored form keeps the
    stored squared distances within 1% of exact float64 ones (the plain norms-and-dot form
    in float32 loses them entirely)."""
    d, t0 = 2000, 12
    est = KernelGradientEstimator(
        d, EstimatorConfig(history=t0, fit="fixed", lengthscale=1.0), dtype=torch.float32
    )
    gen = torch.Generator().manual_seed(0)
    x = 1000.0 + torch.randn(d, generator=gen, dtype=torch.float64)
    stored: list[torch.Tensor] = []
    for it in range(6):  # 6 iterations x 3 points, the ring wraps
        est.begin(x.float())
        pts = x + 0.01 * torch.randn(3, d, generator=gen, dtype=torch.float64).cumsum(0)
        est.append(pts.float(), torch.ones(3, d), iteration=it)
        stored.extend(pts.float().double())
        x = pts[-1] + 0.01
    exact_x = torch.stack(stored[-t0:])
    slots = [(est.count - t0 + j) % t0 for j in range(t0)]
    ours = est.sqdist[slots][:, slots]
    exact = torch.cdist(exact_x, exact_x) ** 2
    off = ~torch.eye(t0, dtype=torch.bool)
    rel = ((ours - exact).abs()[off] / exact[off]).max()
    assert float(rel) < 1e-2
    x32 = exact_x.float()
    naive = (x32 * x32).sum(1)[:, None] + (x32 * x32).sum(1)[None] - 2 * x32 @ x32.T
    assert float(((naive.double() - exact).abs()[off] / exact[off]).max()) > 0.5


def test_jitter_ladder_handles_duplicate_points() -> None:
    pts = _trajectory(d=10, steps=4, seed=2)
    pts = torch.cat([pts, pts[:2]])  # exact duplicates with other gradients
    grads = torch.randn(6, 10, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    est = _filled(pts, grads, fit="fixed", lengthscale=1.0, noise=0.0)
    assert est.mode == "gp" and est.jitter > 0
    assert bool(torch.isfinite(est.query(pts[0] + 0.1)).all())


def test_falls_back_to_newest_gradient_when_every_cholesky_fails() -> None:
    pts = _trajectory(d=10, steps=5, seed=4)
    grads = torch.randn(5, 10, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    est = _filled(pts, grads, fit="fixed", lengthscale=1.0, noise=0.0)
    # Corrupt the distance table into a non-Euclidean one: K becomes strongly indefinite.
    # Points 0 and 1 coincide, 1 and 2 coincide, yet 0 and 2 are far apart.
    est.sqdist[0, 1] = est.sqdist[1, 0] = est.sqdist[1, 2] = est.sqdist[2, 1] = 0.0
    est.sqdist[0, 2] = est.sqdist[2, 0] = 1e6
    est.begin(pts[-1])
    assert est.mode == "mean" and est.fallbacks == 1
    torch.testing.assert_close(est.query(pts[0]), grads[-1])


def test_nan_gradient_is_rejected_naming_the_iteration() -> None:
    est = KernelGradientEstimator(4, EstimatorConfig(history=5))
    grads = torch.ones(2, 4)
    grads[1, 2] = float("nan")
    with pytest.raises(DivergenceError, match=r"point 1 of iteration 7"):
        est.append(torch.zeros(2, 4), grads, iteration=7)
    assert est.size == 0


def test_coincident_points_give_the_mean_gradient_and_memory_is_2_t0_d() -> None:
    est = KernelGradientEstimator(8, EstimatorConfig(history=6))
    assert est.memory_bytes == 2 * 6 * 8 * 4
    est.begin(torch.zeros(8))
    assert est.mode == "empty" and float(est.query(torch.zeros(8)).abs().sum()) == 0.0
    grads = torch.arange(24.0).view(3, 8)
    est.append(torch.zeros(3, 8), grads, iteration=1)
    est.begin(torch.zeros(8))
    assert est.mode == "mean"
    torch.testing.assert_close(est.query(torch.ones(8)), grads.mean(0))


def test_heuristic_raises_the_noise_for_noisy_gradients() -> None:
    """Median-distance lengthscale + LOO noise: exact gradients of a smooth function get a
    tiny relative noise, the same gradients plus N(0, 1) noise get a large one."""
    pts = _trajectory(d=200, steps=30, seed=6)
    exact = 2 * pts + torch.sin(pts)
    noisy = exact + torch.randn(
        exact.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64
    )
    sq = torch.cdist(pts, pts) ** 2
    h_exact = fit_heuristic(sq, exact[:, :64], "matern52")
    h_noisy = fit_heuristic(sq, noisy[:, :64], "matern52")
    assert h_exact is not None and h_noisy is not None
    assert h_exact.noise <= 1e-4 < 1e-2 <= h_noisy.noise
    med = torch.cdist(pts, pts)[torch.triu(torch.ones(30, 30, dtype=torch.bool), 1)].median()
    assert h_exact.lengthscale / float(med) in (0.5, 1.0, 2.0)


@pytest.mark.optex
def test_mll_fit_through_gpytorch_prefers_more_noise_for_noisy_gradients() -> None:
    pts = _trajectory(d=100, steps=20, seed=8)
    exact = 2 * pts + torch.sin(pts)
    noisy = exact + 0.5 * torch.randn(
        exact.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64
    )
    sq = torch.cdist(pts, pts) ** 2
    results = []
    for ys in (exact[:, :32], noisy[:, :32]):
        init = fit_heuristic(sq, ys, "matern52")
        assert init is not None
        hyper = fit_mll(sq, ys, "matern52", init, steps=25)
        assert all(math.isfinite(v) and v > 0 for v in (hyper.lengthscale, hyper.noise))
        results.append(hyper)
    assert results[1].noise > results[0].noise


def test_mds_embedding_reproduces_the_distances() -> None:
    pts = _trajectory(d=50, steps=10, seed=10)
    sq = torch.cdist(pts, pts) ** 2
    emb = mds_embedding(sq)
    torch.testing.assert_close(torch.cdist(emb, emb) ** 2, sq, rtol=1e-8, atol=1e-8)


def test_distances_reused_from_queries_match_exact_ones() -> None:
    """append() takes the distances of queried points from query(); the stored table must
    equal exact pairwise distances of the stored points either way."""
    d, t0, n = 300, 10, 4
    est = KernelGradientEstimator(d, EstimatorConfig(history=t0), dtype=torch.float64)
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(d, generator=gen, dtype=torch.float64)
    stored: list[torch.Tensor] = []
    for it in range(7):
        est.begin(x)
        pts = [x]
        for _ in range(n - 1):  # proxy points, each queried like the optimizer does
            mu = est.query(pts[-1])
            pts.append(
                pts[-1]
                - 0.01 * mu / (mu.norm() + 1)
                + 0.01 * torch.randn(d, generator=gen, dtype=torch.float64)
            )
        p = torch.stack(pts)
        est.append(p, torch.sin(p), iteration=it, queried=est.queried_distances())
        stored.extend(p)
        x = p[-1] + 0.02
    assert est.mode == "gp"
    slots = [(est.count - t0 + j) % t0 for j in range(t0)]
    exact_x = torch.stack(stored[-t0:])
    torch.testing.assert_close(
        est.sqdist[slots][:, slots], torch.cdist(exact_x, exact_x) ** 2, rtol=1e-9, atol=1e-9
    )
