"""When and where the estimator's kernel hyperparameters are fitted.

:class:`HyperFitter` applies the fitting rule (:mod:`optkit_optex.hyper`: heuristic,
GPyTorch marginal likelihood or fixed; ``fit = "mean"`` has no hyperparameters, so the
estimator uses the mean of its history) every ``refit_every`` iterations, either synchronously
(``fit_lag = 0``: the fit is on the iteration's critical path) or lagged: the fit on the history
of iteration t runs in one background worker thread while iteration t goes on, and iteration
t + L uses its result. Deterministic either way: the worker computes a pure function of a copy
of the history, and :meth:`HyperFitter.update` waits for exactly the fit it needs; an exception
in the worker is raised there.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch

from optkit_optex.config import EstimatorConfig
from optkit_optex.hyper import (
    Hyper,
    fit_forward,
    fit_heuristic_solve,
    fit_mll,
    reference_hyper,
    relative_noise,
)

FitResult = tuple[Hyper | None, torch.Tensor | None]
"""Hyperparameters (``None``: all points coincide) and, when the heuristic's
eigendecomposition gives it safely, ``W`` ``(n, n)`` on the fitted history."""

_FIT_POOL: ThreadPoolExecutor | None = None


@dataclass(frozen=True)
class FitContext:
    """What a fit may use besides the history's distances and sampled gradients.

    Attributes:
        holdout: ``(h,)`` rows of the history that the newest round appended
            (``fit = "forward"`` predicts them from the others); ``None``: unknown.
        noise_var: measured per-coordinate noise variance of the stored gradients
            (``noise_estimate = "spread"``); ``None``: not measured (yet).
        point_scale: mean norm of the stored points (``fit = "reference"``).
    """

    holdout: torch.Tensor | None = None
    noise_var: float | None = None
    point_scale: float = 0.0


NO_CONTEXT = FitContext()


def _one_intra_op_thread() -> None:
    """Worker initializer: the fit's matrices are ``T0 x T0`` (tens), for which a pool of
    intra-op threads costs more than it saves (on 2 cores 1.3 ms per fit single-threaded
    against 2.1 ms with 2 threads; more on a 16-core GPU host) and keeps the other cores
    busy spinning. The setting is the calling thread's own (OpenMP's per-thread number of
    threads): the main thread's is unchanged (``tests/optex/test_fit.py``)."""
    torch.set_num_threads(1)


def _fit_pool() -> ThreadPoolExecutor:
    """The single background worker thread that runs lagged fits (created on first use)."""
    global _FIT_POOL
    if _FIT_POOL is None:
        _FIT_POOL = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="optex-fit", initializer=_one_intra_op_thread
        )
    return _FIT_POOL


class HyperFitter:
    """The fit schedule of one estimator.

    Args:
        config: the estimator's options; the fit schedule reads its fitting rule and fixed
            values (``kernel``, ``fit``, ``lengthscale``, ``noise``, ``mll_steps``), how often
            it refits (``refit_every``) and its lag (``fit_lag``, 0: synchronous).
        background: run lagged fits in the worker thread (on CUDA, where the host is
            otherwise idle while the device works); otherwise they are computed in place,
            with the same results (on a CPU a second thread would compete with the main one).
    """

    def __init__(self, config: EstimatorConfig, *, background: bool) -> None:
        fit, noise = config.fit, config.noise
        self.kernel, self.fit_mode = config.kernel, fit
        self.fixed_lengthscale = config.lengthscale
        self.fixed_noise = 1e-3 if (fit == "fixed" and noise is None) else noise
        self.fits = 0  # fits computed (the reference rule counts none: nothing is fitted)
        self.mll_steps, self.refit_every = config.mll_steps, config.refit_every
        self.fit_lag = config.fit_lag
        self.background = background
        self.hyper: Hyper | None = None
        self._pending: deque[tuple[int, Future[FitResult]]] = deque()
        self._fitted = False  # a fit result has been taken

    def update(
        self,
        iteration: int,
        sq: torch.Tensor,
        ys: torch.Tensor,
        context: FitContext = NO_CONTEXT,
    ) -> torch.Tensor | None:
        """Bring :attr:`hyper` up to date for ``iteration`` on the current history.

        Args:
            iteration: the estimator's iteration counter (1-based).
            sq: ``(n, n)`` float64 squared distances between the stored points.
            ys: ``(n, m)`` float64 stored gradients at the fit's coordinates.
            context: the newest round's rows, the measured noise, the points' scale.

        Returns:
            ``W`` ``(n, n)`` for *this* history when the fit that produced :attr:`hyper`
            computed it on this very history (else ``None``: the caller solves).
        """
        refit = not self._fitted or (iteration - 1) % self.refit_every == 0
        solve: torch.Tensor | None = None
        if self.fit_mode == "mean":  # no kernel: the estimator uses the mean of the history
            self.hyper, self._fitted = None, True
            return None
        if self.fit_mode == "reference":  # nothing fitted: the scale of the current history
            self.hyper = reference_hyper(context.point_scale)
            self._fitted = True
            return None
        if self.fit_lag == 0 or self.fit_mode == "fixed":
            if refit:
                self.hyper, solve = self.fit(sq, ys, context)
                self._fitted = True
            return solve
        if refit:  # the worker owns these copies
            self._pending.append((iteration, self._submit(sq.clone(), ys.clone(), context)))
        # Take the newest fit made at least fit_lag iterations ago (the first one always).
        while self._pending and (
            not self._fitted or self._pending[0][0] <= iteration - self.fit_lag
        ):
            fitted_at, future = self._pending.popleft()
            self.hyper, solve = future.result()
            self._fitted = True
            if fitted_at != iteration:  # W of an older history: the caller solves
                solve = None
        return solve

    def fit(
        self, sq: torch.Tensor, ys: torch.Tensor, context: FitContext = NO_CONTEXT
    ) -> FitResult:
        """The fitting rule on the history ``(sq, ys)``; a pure function of its arguments (it
        runs in the worker thread when lagged). A measured noise (``context.noise_var``)
        holds the relative noise at :func:`~optkit_optex.hyper.relative_noise` of it."""
        self.fits += 1
        if self.fit_mode == "fixed":
            assert self.fixed_lengthscale is not None and self.fixed_noise is not None
            return Hyper(self.fixed_lengthscale, 1.0, self.fixed_noise), None
        noise = self.fixed_noise
        if noise is None and context.noise_var is not None:
            noise = relative_noise(context.noise_var, ys)
        if self.fit_mode == "forward":
            holdout = context.holdout
            if holdout is not None:
                holdout = holdout[holdout < sq.shape[0]]
            if holdout is not None and holdout.numel() > 0:
                return fit_forward(
                    sq, ys, holdout, self.kernel, lengthscale=self.fixed_lengthscale, noise=noise
                ), None
        hyper, solve = fit_heuristic_solve(
            sq, ys, self.kernel, lengthscale=self.fixed_lengthscale, noise=noise
        )
        if hyper is None or self.fit_mode != "mll" or sq.shape[0] < 3:
            return hyper, solve
        return fit_mll(
            sq,
            ys,
            self.kernel,
            hyper,
            steps=self.mll_steps,
            fix_lengthscale=self.fixed_lengthscale is not None,
            fix_noise=noise is not None,
        ), None

    def _submit(self, sq: torch.Tensor, ys: torch.Tensor, context: FitContext) -> Future[FitResult]:
        """The fit as a future: in the worker thread with :attr:`background`, else computed
        right here (exceptions are raised where the result is taken, as from the worker)."""
        if self.background:
            return _fit_pool().submit(self.fit, sq, ys, context)
        future: Future[FitResult] = Future()
        try:
            future.set_result(self.fit(sq, ys, context))
        except Exception as err:
            future.set_exception(err)
        return future
