"""Kernel hyperparameters of the gradient estimator, set from the history.

The posterior mean ``mu(x) = k(x, X) (K + s^2 I)^-1 G`` depends on the output scale ``o`` only
through the ratio ``noise = s^2 / o`` (the *relative* noise), so the estimator needs two
numbers: ``lengthscale`` and ``noise``. Both are chosen on a random subsample of ``m`` gradient
coordinates (each coordinate is an independent GP output sharing one kernel), so the cost does
not grow with ``d``. All inputs are small float64 CPU tensors:

* ``sqdist``: ``(n, n)`` squared distances between the stored points;
* ``ys``: ``(n, m)`` the stored gradients at the sampled coordinates.

Two fitting rules:

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from optkit_optex.kernels import evaluate_sq

NOISE_GRID: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
"""Relative noise values tried by the LOO heuristic (``s^2 / outputscale``)."""

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
    n = sqdist.shape[0]
    iu = torch.triu_indices(n, n, offset=1)
    d = sqdist[iu[0], iu[1]].clamp_min(0).sqrt()
    d = d[d > 1e-12 * max(float(d.max()) if d.numel() else 0.0, 1e-300)]
    if d.numel() == 0:
        return None
    return float(d.median())


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
    kmat = evaluate_sq(kernel, sqdist, lengthscale)
    evals, evecs = torch.linalg.eigh(kmat)
    evals = evals.clamp_min(0.0)
    inv = 1.0 / (evals[None, :] + noises[:, None])  # (k, n)
    proj = evecs.T @ ys  # (n, m)
    alpha = torch.matmul(evecs, inv[:, :, None] * proj[None])  # (k, n, m) = A^-1 Y
    diag = ((evecs * evecs) @ inv.T).T  # (k, n) = diag(A^-1)
    resid = alpha / diag[:, :, None]
    return (resid * resid).mean(dim=(1, 2))


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
    outputscale = float((ys * ys).mean()) or 1.0
    if lengthscale is None:
        med = median_distance(sqdist)
        if med is None:
            return None
        scales = [med * s for s in SCALE_GRID]
    else:
        scales = [lengthscale]
    noises = torch.tensor(NOISE_GRID if noise is None else (noise,), dtype=sqdist.dtype)
    if ys.shape[0] < 3 and len(scales) * len(noises) > 1:
        # LOO with fewer than 3 points says nothing: keep the median and a small noise.
        return Hyper(scales[len(scales) // 2], outputscale, 1e-4 if noise is None else noise)
    best: tuple[float, float, float] | None = None
    for ls in scales:
        err = loo_error(sqdist, ys, kernel, ls, noises)
        i = int(torch.argmin(err))
        cand = (float(err[i]), ls, float(noises[i]))
        if best is None or cand[0] < best[0]:
            best = cand
    assert best is not None
    return Hyper(best[1], outputscale, best[2])


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
