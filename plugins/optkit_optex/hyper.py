"""Kernel hyperparameters of the gradient estimator, set from the history.

The posterior mean ``mu(x) = k(x, X) (K + s^2 I)^-1 G`` depends on the output scale ``o`` only
through the ratio ``noise = s^2 / o`` (the *relative* noise), so the estimator needs two
numbers: ``lengthscale`` and ``noise``. Both are chosen on a random subsample of ``m`` gradient
coordinates (each coordinate is an independent GP output sharing one kernel), so the cost does
not grow with ``d``. All inputs are small float64 CPU tensors:

* ``sqdist``: ``(n, n)`` squared distances between the stored points;
* ``ys``: ``(n, m)`` the stored gradients at the sampled coordinates.

Fitting rules (``fit = "fixed"`` needs none):

* :func:`fit_heuristic`: lengthscale = ``scale`` x the median pairwise distance (the median
  heuristic), then ``scale`` in {0.5, 1, 2} and the relative noise on a log grid are picked by
  the closed-form leave-one-out (LOO) residual of the GP on ``ys`` (Rasmussen & Williams, eq.
  5.12): exact gradients drive the noise down to the jitter floor, noisy gradients push it up
  to the residual variance ratio. Closed form, a few hundred microseconds.
* :func:`fit_mll`: maximise GPyTorch's exact marginal likelihood (``ExactGP`` +
  ``ExactMarginalLogLikelihood``, the ``m`` coordinates as a batch of independent outputs with
  shared hyperparameters) over lengthscale, output scale and noise, starting from the
  heuristic. The points enter GPyTorch through an exact Euclidean embedding of ``sqdist``
  (classical MDS: ``n`` points in ``R^(n-1)`` with the same pairwise distances), so GPyTorch's
  kernel sees exactly the distances of the ``d``-dimensional points.
* :func:`fit_forward` (``fit = "forward"``): the heuristic's candidates, chosen by how well
  the GP on the older pairs predicts the newest round's gradients (:func:`forward_errors`).
* :func:`reference_hyper` (``fit = "reference"``): the released settings, nothing fitted.

:func:`relative_noise` turns a measured gradient noise variance into the relative noise
(``noise_estimate = "spread"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from optkit_optex.kernels import kernel_spec

NOISE_GRID: tuple[float, ...] = (
    1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 3.0, 10.0, 30.0, 100.0
)  # fmt: skip
"""Relative noise values tried by the LOO heuristic (``s^2 / outputscale``).

Values above 1 are for minibatch gradients of networks, whose noise can exceed their signal:
there the LOO choice sat at the grid's former top (1.0) in every iteration, and allowing up to
100 halved OptEx's iterations on the benchmark MLP without changing the exact-gradient counts
(``docs/benchmarks/optex-workloads.md``, CPU diagnosis of session 2)."""

SCALE_GRID: tuple[float, ...] = (0.5, 1.0, 2.0)
"""Multiples of the median pairwise distance tried as lengthscale by the LOO heuristic."""


@dataclass(frozen=True)
class Hyper:
    """Kernel hyperparameters: lengthscale (distance units), output scale (gradient units
    squared) and relative noise ``s^2 / outputscale``."""

    lengthscale: float
    outputscale: float
    noise: float


def median_distance(sqdist: torch.Tensor) -> float | None:
    """Median of the positive off-diagonal pairwise distances; ``None`` if all points coincide."""
    med = float(_median_distance_t(sqdist))
    return None if math.isnan(med) else med


def _median_distance_t(sqdist: torch.Tensor) -> torch.Tensor:
    """:func:`median_distance` as a 0-d tensor, NaN for "all points coincide" (no host
    synchronisation): the lower median of the distances above ``1e-12`` x the largest."""
    n = sqdist.shape[0]
    iu = torch.triu_indices(n, n, offset=1)
    d = sqdist[iu[0], iu[1]].clamp_min(0).sqrt()
    if d.numel() == 0:
        return torch.tensor(math.nan, dtype=sqdist.dtype)
    keep = d > 1e-12 * d.max().clamp_min(1e-300)
    return torch.nanmedian(torch.where(keep, d, math.nan))


def loo_error(
    sqdist: torch.Tensor, ys: torch.Tensor, kernel: str, lengthscale: float, noises: torch.Tensor
) -> torch.Tensor:
    """Mean squared leave-one-out residual of the GP mean on ``ys`` for each relative noise.

    Args:
        sqdist: ``(n, n)`` squared distances; ys: ``(n, m)`` targets; noises: ``(k,)``.

    Returns:
        ``(k,)`` mean over points and coordinates of ``([A^-1 Y]_i / [A^-1]_ii)^2`` with
        ``A = K + noise I`` (unit output scale).
    """
    scales = torch.tensor([lengthscale], dtype=sqdist.dtype)
    return loo_errors(sqdist, ys @ ys.T, ys.shape[1], kernel, scales, noises)[0][0]


def loo_errors(
    sqdist: torch.Tensor,
    gram: torch.Tensor,
    m: int,
    kernel: str,
    lengthscales: torch.Tensor,
    noises: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`loo_error` for every (lengthscale, noise) pair at once, from the targets' Gram
    matrix ``gram = Y Y^T`` ``(n, n)`` (``m`` columns).

    One batched eigendecomposition ``K_l = E_l diag(e_l) E_l^T`` of the ``L`` kernel matrices;
    then ``A^-1 = E diag(1/(e + noise)) E^T`` for every noise, ``sum_c [A^-1 Y]_ic^2 =
    [B S B^T]_ii`` with ``B = E diag(1/(e + noise))`` and ``S = E^T Y Y^T E``: O(L k n^3),
    independent of ``m``.

    Args:
        lengthscales: ``(L,)``; noises: ``(k,)``.

    Returns:
        ``(L, k)`` errors, and the ``(L, n)`` eigenvalues (clamped at 0) and ``(L, n, n)``
        eigenvectors of the kernel matrices.
    """
    ls_sq = lengthscales * lengthscales
    kmat = kernel_spec(kernel).closed_form(sqdist.clamp_min(0.0)[None] / ls_sq[:, None, None])
    evals, evecs = torch.linalg.eigh(kmat)  # (L, n), (L, n, n)
    evals = evals.clamp_min(0.0)
    inv = 1.0 / (evals[:, None, :] + noises[None, :, None])  # (L, k, n)
    s = evecs.mT @ gram @ evecs  # (L, n, n)
    n, k = evals.shape[1], noises.numel()
    b = (evecs[:, None] * inv[:, :, None, :]).reshape(-1, k * n, n)  # (L, k n, n)
    num = ((b @ s) * b).sum(2).view(-1, k, n)  # (L, k, n) = sum_c [A^-1 Y]_ic^2
    diag = inv @ (evecs * evecs).mT  # (L, k, n) = diag(A^-1)
    return (num / (diag * diag)).mean(2) / m, evals, evecs


EIG_SOLVE_MIN_NOISE = 1e-8
"""Smallest relative noise for which :func:`fit_heuristic_solve` returns the inverse from
the fit's eigendecomposition (``K + noise I`` has condition number <= ``(n + noise) /
noise``: safe in float64); below it the caller's Cholesky ladder decides."""


def fit_heuristic(
    sqdist: torch.Tensor,
    ys: torch.Tensor,
    kernel: str,
    *,
    lengthscale: float | None = None,
    noise: float | None = None,
) -> Hyper | None:
    """Median-distance lengthscale and LOO-chosen relative noise (see the module docstring).

    A given ``lengthscale`` or ``noise`` is kept as is. Returns ``None`` when the points all
    coincide and no lengthscale was given (the estimator then averages the stored gradients).
    """
    return fit_heuristic_solve(sqdist, ys, kernel, lengthscale=lengthscale, noise=noise)[0]


def fit_heuristic_solve(
    sqdist: torch.Tensor,
    ys: torch.Tensor,
    kernel: str,
    *,
    lengthscale: float | None = None,
    noise: float | None = None,
) -> tuple[Hyper | None, torch.Tensor | None]:
    """:func:`fit_heuristic` plus ``W = (K + noise I)^-1`` ``(n, n)`` at the chosen values,
    reused from the fit's eigendecomposition (eigenvalues clamped at 0, so W is positive
    definite), or ``None`` when the noise is below :data:`EIG_SOLVE_MIN_NOISE`, W is not
    finite or no LOO ran (the caller then takes the Cholesky ladder).

    All candidates in one batched computation (:func:`loo_errors`), the first minimum in
    (lengthscale, noise) order chosen on the tensor, and a single host conversion at the end.
    """
    dtype = sqdist.dtype
    outputscale = (ys * ys).mean()
    if lengthscale is None:
        med = _median_distance_t(sqdist)
        scales = med * torch.tensor(SCALE_GRID, dtype=dtype)
    else:
        scales = torch.tensor([lengthscale], dtype=dtype)
    noises = torch.tensor(NOISE_GRID if noise is None else (noise,), dtype=dtype)
    if ys.shape[0] < 3 and scales.numel() * noises.numel() > 1:
        # LOO with fewer than 3 points says nothing: keep the median and a small noise.
        os_, ls = torch.stack([outputscale, scales[scales.numel() // 2]]).tolist()
        if math.isnan(ls):
            return None, None
        return Hyper(ls, os_ or 1.0, 1e-4 if noise is None else noise), None
    # All points coincide (NaN median): run on unit lengthscales, report None at the end.
    safe_scales = torch.nan_to_num(scales, nan=1.0)
    err, evals, evecs = loo_errors(sqdist, ys @ ys.T, ys.shape[1], kernel, safe_scales, noises)
    k = noises.numel()
    best = torch.argmin(err.reshape(-1))
    li, ni = torch.div(best, k, rounding_mode="floor"), best % k
    e, vecs, nz = evals[li], evecs[li], noises[ni]
    w = (vecs * (1.0 / (e + nz))[None, :]) @ vecs.T
    finite = torch.isfinite(w).all().to(dtype)
    os_, ls, nz_f, ok = torch.stack([outputscale, scales[li], nz, finite]).tolist()
    if math.isnan(ls):
        return None, None
    hyper = Hyper(ls, os_ or 1.0, nz_f)
    return hyper, (w if ok and nz_f >= EIG_SOLVE_MIN_NOISE else None)


def forward_errors(
    sqdist: torch.Tensor,
    ys: torch.Tensor,
    holdout: torch.Tensor,
    kernel: str,
    lengthscales: torch.Tensor,
    noises: torch.Tensor,
) -> torch.Tensor:
    """Mean squared error of predicting the held-out rows of ``ys`` from the others with the
    GP mean, for every (lengthscale, noise) pair: what the proxy steps ask of the kernel
    (extrapolate ahead of the stored points), where :func:`loo_errors` scores interpolation.

    Args:
        sqdist: ``(n, n)`` squared distances; ys: ``(n, m)`` targets; holdout: ``(h,)`` row
            indices to predict (the newest round), ``1 <= h <= n - 2``;
        lengthscales: ``(L,)``; noises: ``(k,)``.

    Returns:
        ``(L, k)`` mean over held-out rows and coordinates of ``(mu - y)^2``, with
        ``mu = K_ht (K_tt + noise I)^-1 Y_t`` (unit output scale), from one batched
        eigendecomposition of the ``L`` training kernel matrices.
    """
    n = sqdist.shape[0]
    keep = torch.ones(n, dtype=torch.bool)
    keep[holdout] = False
    train = keep.nonzero().flatten()
    ls_sq = (lengthscales * lengthscales)[:, None, None]
    spec = kernel_spec(kernel)
    k_tt = spec.closed_form(sqdist[train][:, train].clamp_min(0.0)[None] / ls_sq)  # (L, t, t)
    k_ht = spec.closed_form(sqdist[holdout][:, train].clamp_min(0.0)[None] / ls_sq)  # (L, h, t)
    evals, evecs = torch.linalg.eigh(k_tt)
    evals = evals.clamp_min(0.0)
    z = evecs.mT @ ys[train]  # (L, t, m)
    kx = k_ht @ evecs  # (L, h, t)
    inv = 1.0 / (evals[:, None, :] + noises[None, :, None])  # (L, k, t)
    pred = (kx[:, None] * inv[:, :, None, :]) @ z[:, None]  # (L, k, h, m)
    return ((pred - ys[holdout][None, None]) ** 2).mean((2, 3))


def fit_forward(
    sqdist: torch.Tensor,
    ys: torch.Tensor,
    holdout: torch.Tensor,
    kernel: str,
    *,
    lengthscale: float | None = None,
    noise: float | None = None,
) -> Hyper | None:
    """The heuristic's candidates (``SCALE_GRID`` x the median distance, ``NOISE_GRID``; a
    given ``lengthscale`` or ``noise`` held), chosen by :func:`forward_errors` on the
    ``holdout`` rows instead of by leave-one-out. Falls back to :func:`fit_heuristic` when
    fewer than 2 rows would be left to train on. ``None`` when all points coincide."""
    n, h = sqdist.shape[0], holdout.numel()
    if h < 1 or n - h < 2:
        return fit_heuristic(sqdist, ys, kernel, lengthscale=lengthscale, noise=noise)
    dtype = sqdist.dtype
    if lengthscale is None:
        med = median_distance(sqdist)
        if med is None:
            return None
        scales = med * torch.tensor(SCALE_GRID, dtype=dtype)
    else:
        scales = torch.tensor([lengthscale], dtype=dtype)
    noises = torch.tensor(NOISE_GRID if noise is None else (noise,), dtype=dtype)
    err = forward_errors(sqdist, ys, holdout, kernel, scales, noises)
    best = int(torch.argmin(err.reshape(-1)))
    li, ni = divmod(best, noises.numel())
    outputscale = float((ys * ys).mean()) or 1.0
    return Hyper(float(scales[li]), outputscale, float(noises[ni]))


def relative_noise(noise_var: float, ys: torch.Tensor) -> float:
    """The relative noise ``s^2 / o`` from a measured per-coordinate gradient noise variance
    ``s^2`` and the stored gradients ``ys`` ``(n, m)``, whose mean square is ``o + s^2``;
    clamped to the range of ``NOISE_GRID``."""
    signal = float((ys * ys).mean()) - noise_var
    low, high = NOISE_GRID[0], NOISE_GRID[-1]
    if signal <= 0.0:
        return high
    return min(max(noise_var / signal, low), high)


REFERENCE_LENGTHSCALE = 0.1
"""``fit = "reference"``: the released code's lengthscale, on inputs divided by one shared
scale (here the mean norm of the stored points), and its relative noise 1e-3."""
REFERENCE_NOISE = 1e-3


def reference_hyper(point_scale: float) -> Hyper:
    """The released settings: lengthscale 0.1 on inputs divided by ``point_scale`` (so 0.1 x
    ``point_scale`` in distance units; 0.1 when the scale is not positive), noise 1e-3."""
    scale = point_scale if point_scale > 0.0 and math.isfinite(point_scale) else 1.0
    return Hyper(REFERENCE_LENGTHSCALE * scale, 1.0, REFERENCE_NOISE)


def mds_embedding(sqdist: torch.Tensor) -> torch.Tensor:
    """Points ``(n, n)`` whose pairwise squared distances equal ``sqdist`` (classical MDS;
    tiny negative eigenvalues from rounding are clamped to 0)."""
    n = sqdist.shape[0]
    centre = torch.eye(n, dtype=sqdist.dtype) - 1.0 / n
    gram = -0.5 * centre @ sqdist @ centre
    evals, evecs = torch.linalg.eigh(0.5 * (gram + gram.T))
    return evecs * evals.clamp_min(0.0).sqrt()[None, :]


def fit_mll(
    sqdist: torch.Tensor,
    ys: torch.Tensor,
    kernel: str,
    init: Hyper,
    *,
    steps: int = 30,
    lr: float = 0.1,
    fix_lengthscale: bool = False,
    fix_noise: bool = False,
) -> Hyper:
    """Maximise GPyTorch's exact marginal likelihood from ``init`` (see module docstring).

    ``ys`` is scaled by ``sqrt(init.outputscale)`` for conditioning (the output scale is fitted
    on that scale and mapped back). Returns ``init`` unchanged if the optimisation produced a
    non-finite value.
    """
    import gpytorch

    from optkit_optex.kernels import gpytorch_kernel

    scale = math.sqrt(init.outputscale)
    x = mds_embedding(sqdist)
    y = (ys / scale).T.contiguous()  # (m, n): a batch of m independent outputs
    m = y.shape[0]

    class _GP(gpytorch.models.ExactGP):  # type: ignore[misc, name-defined]
        def __init__(self, likelihood: Any) -> None:
            super().__init__(x, y, likelihood)
            self.mean_module = gpytorch.means.ZeroMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch_kernel(kernel))

        def forward(self, inputs: torch.Tensor) -> Any:
            mean = self.mean_module(inputs).expand(m, -1)
            covar = self.covar_module(inputs).expand(m, -1, -1)
            return gpytorch.distributions.MultivariateNormal(mean, covar)

    likelihood = gpytorch.likelihoods.GaussianLikelihood(
        noise_constraint=gpytorch.constraints.GreaterThan(1e-8)
    ).to(torch.float64)
    model = _GP(likelihood).to(torch.float64)
    model.covar_module.base_kernel.lengthscale = init.lengthscale
    model.covar_module.outputscale = 1.0
    likelihood.noise = max(init.noise, 1e-8)
    if fix_lengthscale:
        model.covar_module.base_kernel.raw_lengthscale.requires_grad_(False)
    if fix_noise:
        likelihood.raw_noise.requires_grad_(False)
    model.train()
    likelihood.train()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    with (
        torch.enable_grad(),
        gpytorch.settings.cholesky_jitter(double_value=1e-8),
        gpytorch.settings.max_cholesky_size(10_000),
    ):
        for _ in range(steps):
            opt.zero_grad()
            loss = -mll(model(x), y).sum()
            if not torch.isfinite(loss):
                return init
            loss.backward()
            opt.step()
    with torch.no_grad():
        ls = float(model.covar_module.base_kernel.lengthscale)
        os_ = float(model.covar_module.outputscale)
        nz = float(likelihood.noise)
    if not all(math.isfinite(v) and v > 0 for v in (ls, os_, nz)):
        return init
    if fix_noise:
        return Hyper(ls, os_ * init.outputscale, init.noise)
    return Hyper(ls, os_ * init.outputscale, nz / os_)
