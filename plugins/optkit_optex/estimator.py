"""The kernelized gradient estimator of OptEx: a GP posterior mean over a ring buffer.

Model: every gradient coordinate is an independent Gaussian process over the parameter point
with one shared scalar kernel (a separable kernel ``k(x, x') I_d``). From the last ``T0``
pairs ``(X_i, G_i)`` the estimate at ``x`` is the posterior mean::

    mu(x) = k(x, X) (K + s^2 I)^-1 G          k(x, X): (T0,), K: (T0, T0), G: (T0, d)

Cost engineering (``d`` large, ``T0`` small):

* ``X`` and ``G`` are preallocated ``(T0, d)`` ring buffers (``2 T0 d`` floats, nothing else
  of size ``T0 d``); unused slots are zero and carry zero weight.
* ``W = (K + s^2 I)^-1`` (``T0 x T0``) is computed once per iteration (:meth:`begin`), on the
  CPU in float64 with a jitter ladder; a query is then two matrix-vector products over the
  history: ``s = X v`` for the distances and ``mu = (W k) G``.
* Distances come from one matrix-vector product, not ``cdist``: with an *anchor* ``c`` (the
  iteration's start point) and ``a_i = ||X_i - c||^2``,
  ``||x - X_i||^2 = a_i + ||v||^2 - 2 (Y_i . v - c_y . v)`` with ``v = x - c``, where the
  buffer stores offsets ``Y_i = X_i - h`` from an origin ``h`` near the trajectory and
  ``c_y = c - h``. Both ``v`` (a few steps) and ``Y`` (the trajectory's extent) are small, so
  the float32 rounding error is ``eps |Y| |v|``, not the ``eps |X|^2`` of the plain
  norms-and-dot-product form, which swamps the tiny distances between consecutive iterates.
  ``a`` moves to the next anchor with the same formula (one more product per iteration);
  ``h`` is re-based (one pass over ``Y``) only when the anchor drifts farther from it than the
  stored points are; pairwise distances of new points are computed once, on entry.
"""

from __future__ import annotations

import importlib.util
import math
from typing import Literal

import torch

from optkit.errors import ConfigError, DivergenceError
from optkit_optex.hyper import Hyper, fit_heuristic, fit_mll
from optkit_optex.kernels import evaluate_sq, kernel_spec

FitMode = Literal["heuristic", "mll", "fixed"]

JITTERS: tuple[float, ...] = (0.0, 1e-8, 1e-6, 1e-4, 1e-2)
"""Relative jitter ladder (times the mean diagonal of ``K + s^2 I``) tried for Cholesky."""


class KernelGradientEstimator:
    """Posterior-mean gradient estimates from the last ``history`` (point, gradient) pairs.

    Life cycle per OptEx iteration: :meth:`begin` (anchor at the iteration's start point, fit
    hyperparameters, cache ``W``), :meth:`query` N-1 times, :meth:`append` the N true pairs.

    Args:
        dim: d, the number of parameters (points are flat ``(d,)`` tensors).
        history: T0 >= 2, the number of pairs kept.
        kernel: a name from :data:`optkit_optex.kernels.KERNELS`.
        fit: ``"heuristic"`` (median distance + leave-one-out noise), ``"mll"`` (GPyTorch
            marginal likelihood, started from the heuristic) or ``"fixed"``.
        lengthscale: hold the lengthscale at this value (required for ``fit="fixed"``).
        noise: hold the relative noise ``s^2 / outputscale`` at this value (``"fixed"``
            defaults it to 1e-3, the released reference's value).
        fit_coords: m, the number of gradient coordinates the fit looks at.
        refit_every: refit the hyperparameters every this many iterations (``W`` is rebuilt
            every iteration regardless).
        mll_steps: Adam steps of the marginal-likelihood fit.
        device / dtype: where the buffers live (the parameters' device and dtype).
        seed: seed of the coordinate subsample.
    """

    def __init__(
        self,
        dim: int,
        history: int,
        *,
        kernel: str = "matern52",
        fit: FitMode = "heuristic",
        lengthscale: float | None = None,
        noise: float | None = None,
        fit_coords: int = 128,
        refit_every: int = 1,
        mll_steps: int = 30,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
    ) -> None:
        validate_estimator_config(
            history=history,
            kernel=kernel,
            fit=fit,
            lengthscale=lengthscale,
            noise=noise,
            fit_coords=fit_coords,
            refit_every=refit_every,
            mll_steps=mll_steps,
        )
        self.dim, self.history, self.kernel, self.fit = dim, history, kernel, fit
        self.fixed_lengthscale = lengthscale
        self.fixed_noise = 1e-3 if (fit == "fixed" and noise is None) else noise
        self.refit_every, self.mll_steps = refit_every, mll_steps
        self.device, self.dtype = torch.device(device), dtype
        self.X = torch.zeros(history, dim, device=self.device, dtype=dtype)  # offsets Y
        self.G = torch.zeros(history, dim, device=self.device, dtype=dtype)
        self.valid = torch.zeros(history, dtype=torch.bool)
        self.valid_dev = torch.zeros(history, device=self.device, dtype=dtype)  # 1.0 / 0.0
        self.sqdist = torch.zeros(history, history, dtype=torch.float64)
        self.count = 0  # pairs ever appended
        gen = torch.Generator().manual_seed(seed)
        m = min(fit_coords, dim)
        self.coords = torch.randperm(dim, generator=gen)[:m].sort().values.to(self.device)
        self.origin: torch.Tensor | None = None  # X stores offsets from this point
        self.anchor: torch.Tensor | None = None  # the iteration's start point
        self.anchor_y: torch.Tensor | None = None  # anchor - origin
        self.a = torch.zeros(history, device=self.device, dtype=dtype)
        self.W = torch.zeros(history, history, device=self.device, dtype=dtype)
        self.hyper: Hyper | None = None
        self.mode: Literal["empty", "mean", "gp"] = "empty"
        self.mean_grad = torch.zeros(dim, device=self.device, dtype=dtype)
        # (point, its squared distances) of this iteration's queries, reused by append()
        self._queried: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.iteration = 0
        self.jitter = 0.0
        self.fallbacks = 0

    # ---------------------------------------------------------------------------- properties
    @property
    def size(self) -> int:
        """Number of stored pairs (<= T0)."""
        return int(self.valid.sum())

    @property
    def memory_bytes(self) -> int:
        """Bytes of the two ring buffers: exactly ``2 * T0 * d * itemsize``."""
        return self.X.numel() * self.X.element_size() + self.G.numel() * self.G.element_size()

    # ---------------------------------------------------------------------------- iteration
    @torch.no_grad()
    def begin(self, anchor: torch.Tensor) -> None:
        """Start an iteration at ``anchor`` (flat ``(d,)``): move the anchor, refit, cache W."""
        anchor = anchor.detach().to(self.dtype).clone()
        self.iteration += 1
        self._queried.clear()
        if self.origin is None or self.size == 0:
            self.anchor, self.mode = anchor, "empty"
            return
        assert self.anchor is not None
        anchor_y = anchor - self.origin
        self.a = self._sqdist_from_anchor(anchor - self.anchor)
        drift, spread = torch.stack([torch.dot(anchor_y, anchor_y), self.a.max()]).tolist()
        if drift > spread:
            # Re-base the stored offsets on the new anchor (distances are unchanged): keeps
            # |Y| at the trajectory's extent, so rounding stays relative to the distances.
            if bool(self.valid.all()):
                self.X.sub_(anchor_y)  # in place, one pass
            else:
                self.X[self.valid.to(self.device)] -= anchor_y
            self.origin, anchor_y = anchor.clone(), torch.zeros_like(anchor_y)
        self.anchor, self.anchor_y = anchor, anchor_y
        self._queried.clear()
        idx = self.valid.nonzero().squeeze(1)
        sq = self.sqdist[idx][:, idx]
        if self.hyper is None or (self.iteration - 1) % self.refit_every == 0:
            self.hyper = self._fit(sq, idx)
        if self.hyper is None:
            self._use_mean(idx)
            return
        self._cache_weights(sq, idx, self.hyper)

    @torch.no_grad()
    def query(self, x: torch.Tensor) -> torch.Tensor:
        """``mu(x)``, shape ``(d,)``, for a flat point ``x`` of shape ``(d,)``."""
        if self.mode == "empty":
            return torch.zeros_like(self.mean_grad)
        if self.mode == "mean":
            return self.mean_grad.clone()
        assert self.anchor is not None and self.hyper is not None
        x = x.detach()
        v = x.to(self.dtype) - self.anchor
        sq = self._sqdist_to(v, torch.mv(self.X, v))
        self._queried.append((x, sq))  # reused by append: no second pass over X for x
        kvec = evaluate_sq(self.kernel, sq, self.hyper.lengthscale)
        return torch.mv(self.G.T, torch.mv(self.W, kvec))

    @torch.no_grad()
    def append(self, points: torch.Tensor, grads: torch.Tensor, iteration: int) -> None:
        """Add N pairs (``points``, ``grads``: ``(N, d)``); the oldest pairs drop out.

        Raises:
            DivergenceError: a gradient holds NaN or inf (naming ``iteration``); nothing is
                stored then.
        """
        if points.shape != grads.shape or points.dim() != 2 or points.shape[1] != self.dim:
            raise ValueError(
                f"append needs points and grads of shape (N, {self.dim}), got"
                f" {tuple(points.shape)} and {tuple(grads.shape)}"
            )
        finite = torch.isfinite(grads).all(dim=1)
        if not bool(finite.all()):
            bad = int((~finite).nonzero()[0])
            raise DivergenceError(
                f"optex: non-finite gradient at point {bad} of iteration {iteration}; refusing"
                " to store it in the estimator's history"
            )
        points = points.detach().to(self.dtype)[-self.history :]
        grads = grads.detach().to(self.dtype)[-self.history :]
        if self.origin is None:
            self.origin = points[0].clone()
        if self.anchor is None or self.size == 0:
            self.anchor = points[0].clone()
            self.anchor_y = self.anchor - self.origin
            self.a.zero_()
        assert self.anchor_y is not None
        vs = points - self.anchor  # (N, d), small: within a few steps of the anchor
        vv = (vs * vs).sum(1)
        # Distances to the stored points: reuse those computed by query() at the same point,
        # one product over X for the others (usually only the last point of the iteration).
        to_old = torch.empty(points.shape[0], self.history, device=self.device, dtype=self.dtype)
        # query() is called at the iteration's points in order, so match j-th to j-th (one
        # device sync for all the checks).
        pairs = list(zip(self._queried, points, strict=False)) if self.mode == "gp" else []
        same: list[bool] = []
        if pairs:
            checks = [
                (x == p).all()
                if x.shape == p.shape
                else torch.zeros((), dtype=torch.bool, device=self.device)
                for (x, _), p in pairs
            ]
            same = torch.stack(checks).tolist()
        missing = []
        for j in range(points.shape[0]):
            if j < len(same) and same[j]:
                to_old[j] = pairs[j][0][1]
            else:
                missing.append(j)
        if missing:
            rows = torch.tensor(missing, device=self.device)
            old = torch.mm(self.X, vs[rows].T).T  # (M, T0): Y_i . v_j
            cv = torch.mv(vs[rows], self.anchor_y)
            to_old[rows] = (self.a[None, :] + vv[rows, None] - 2.0 * (old - cv[:, None])).clamp_min(
                0.0
            )
        gram = vs @ vs.T
        among = (vv[:, None] + vv[None, :] - 2.0 * gram).clamp_min(0.0)
        slots = [(self.count + j) % self.history for j in range(points.shape[0])]
        both = torch.cat([to_old, among], dim=1).to("cpu", torch.float64)  # one transfer
        to_old_cpu, among_cpu = both[:, : self.history], both[:, self.history :]
        for j, s in enumerate(slots):
            self.sqdist[s, :] = to_old_cpu[j]
            self.sqdist[:, s] = to_old_cpu[j]
        slot_t = torch.tensor(slots)
        self.sqdist[slot_t[:, None], slot_t[None, :]] = among_cpu
        self.sqdist.diagonal().zero_()
        dev_slots = slot_t.to(self.device)
        self.X[dev_slots] = points - self.origin
        self.G[dev_slots] = grads
        self.a[dev_slots] = vv
        self.valid[slot_t] = True
        self.valid_dev[dev_slots] = 1.0
        self._queried.clear()
        self.count += points.shape[0]

    # ---------------------------------------------------------------------------- internals
    def _sqdist_to(self, v: torch.Tensor, xv: torch.Tensor) -> torch.Tensor:
        """Squared distances ``(T0,)`` from ``anchor + v`` to the stored points, given
        ``xv = X v``."""
        assert self.anchor_y is not None
        cv = torch.dot(self.anchor_y, v)
        return (self.a + torch.dot(v, v) - 2.0 * (xv - cv)).clamp_min(0.0)

    def _sqdist_from_anchor(self, v: torch.Tensor) -> torch.Tensor:
        return self._sqdist_to(v, torch.mv(self.X, v)) * self.valid_dev

    def _fit(self, sq: torch.Tensor, idx: torch.Tensor) -> Hyper | None:
        if self.fit == "fixed":
            assert self.fixed_lengthscale is not None and self.fixed_noise is not None
            return Hyper(self.fixed_lengthscale, 1.0, self.fixed_noise)
        ys = self.G.index_select(1, self.coords)[idx.to(self.device)].to("cpu", torch.float64)
        hyper = fit_heuristic(
            sq, ys, self.kernel, lengthscale=self.fixed_lengthscale, noise=self.fixed_noise
        )
        if hyper is None or self.fit == "heuristic" or sq.shape[0] < 3:
            return hyper
        return fit_mll(
            sq,
            ys,
            self.kernel,
            hyper,
            steps=self.mll_steps,
            fix_lengthscale=self.fixed_lengthscale is not None,
            fix_noise=self.fixed_noise is not None,
        )

    def _use_mean(self, idx: torch.Tensor) -> None:
        """Fallback: the average of the stored gradients (the GP mean as lengthscale -> inf)."""
        self.mode = "mean"
        self.mean_grad = self.G[idx.to(self.device)].mean(0)

    def _cache_weights(self, sq: torch.Tensor, idx: torch.Tensor, hyper: Hyper) -> None:
        """W = (K + noise I)^-1 over the valid slots, with the jitter ladder; falls back to
        the newest gradient if every rung fails."""
        kmat = evaluate_sq(self.kernel, sq, hyper.lengthscale)
        n = kmat.shape[0]
        amat = kmat + hyper.noise * torch.eye(n, dtype=kmat.dtype)
        scale = float(amat.diagonal().mean())
        for jitter in JITTERS:
            chol, info = torch.linalg.cholesky_ex(
                amat + jitter * scale * torch.eye(n, dtype=kmat.dtype)
            )
            if int(info) == 0 and bool(torch.isfinite(chol).all()):
                inv = torch.cholesky_inverse(chol)
                if bool(torch.isfinite(inv).all()) and math.isfinite(float(inv.abs().max())):
                    full = torch.zeros(self.history, self.history, dtype=torch.float64)
                    full[idx[:, None], idx[None, :]] = inv
                    self.W = full.to(self.device, self.dtype)
                    self.jitter = jitter
                    self.mode = "gp"
                    return
        self.fallbacks += 1
        self.mode = "mean"
        newest = (self.count - 1) % self.history
        self.mean_grad = self.G[newest].clone()


def validate_estimator_config(
    *,
    history: int,
    kernel: str,
    fit: str,
    lengthscale: float | None,
    noise: float | None,
    fit_coords: int,
    refit_every: int,
    mll_steps: int,
) -> None:
    """Raise :class:`ConfigError` naming the key for any invalid estimator option."""
    where = "optimizer 'optex'"
    if history < 2:
        raise ConfigError(f"{where}: history (T0) must be >= 2, got {history}")
    kernel_spec(kernel)
    if fit not in ("heuristic", "mll", "fixed"):
        raise ConfigError(f"{where}: fit must be 'heuristic', 'mll' or 'fixed', got {fit!r}")
    if fit == "mll" and importlib.util.find_spec("gpytorch") is None:
        raise ConfigError(f"{where}: fit = 'mll' needs gpytorch: pip install 'optkit[optex]'")
    if fit == "fixed" and lengthscale is None:
        raise ConfigError(f"{where}: fit = 'fixed' needs a lengthscale")
    if lengthscale is not None and not lengthscale > 0:
        raise ConfigError(f"{where}: lengthscale must be > 0, got {lengthscale}")
    if noise is not None and not noise >= 0:
        raise ConfigError(f"{where}: noise must be >= 0, got {noise}")
    if fit_coords < 1:
        raise ConfigError(f"{where}: fit_coords must be >= 1, got {fit_coords}")
    if refit_every < 1:
        raise ConfigError(f"{where}: refit_every must be >= 1, got {refit_every}")
    if mll_steps < 1:
        raise ConfigError(f"{where}: mll_steps must be >= 1, got {mll_steps}")
