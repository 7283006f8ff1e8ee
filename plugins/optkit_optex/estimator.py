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
* No host synchronisation in the hot path: the T0 x T0 distance table and the gradients at
  the fit's coordinates live on the device, :meth:`append` updates them with ``index_copy_``
  and sends them to pinned host memory without blocking; :meth:`begin` fits on that copy and
  sends W and the squared lengthscale back the same way, into static buffers that
  :meth:`query_into` reads (so the proxy loop can be captured in a CUDA graph).
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
* ``device_solve`` (the optimizer's default on CUDA): ``W`` is computed on
  the device from the device distance table (:meth:`solve_device`): the whole jitter
  ladder as one batched ``cholesky_ex`` (no error check, so no synchronisation), the
  first rung that succeeded chosen on the device, and a device-side ``ok`` flag; when no
  rung succeeds the queries return the newest stored gradient (``mu = G^T e_newest``,
  branchless). The host only uploads the (lagged) hyperparameters, without blocking. So
  :meth:`begin`'s device work (anchor move + solve) can be captured in a CUDA graph with
  the proxy loop, and :meth:`append`'s device work is replayed from a CUDA graph per
  (N, queried rows).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import Literal

import torch

from optkit.cuda_graphs import KeyedGraphs
from optkit.errors import DivergenceError
from optkit_optex.config import EstimatorConfig
from optkit_optex.fit_schedule import FitContext, HyperFitter
from optkit_optex.gram import row_gram
from optkit_optex.hyper import Hyper
from optkit_optex.kernels import evaluate_sq, kernel_spec
from optkit_optex.solve import JITTERS, device_inverse, host_inverse

__all__ = ["JITTERS", "KernelGradientEstimator", "round_spread"]

log = logging.getLogger(__name__)

NOISE_ROUNDS = 10
"""``noise_estimate = "spread"``: the noise variance is the mean of the last this many
rounds' measurements."""

SNAP_TAIL = 6
"""Scalars at the end of the host snapshot: point scale, round noise, drift, spread, rung,
ok."""


def round_spread(gc: torch.Tensor) -> torch.Tensor:
    """Noise variance per coordinate from one round's gradients ``gc`` ``(N, m)`` taken along
    the trajectory: half the mean squared difference of consecutive gradients (the signal
    changes little between neighbouring points, so mostly their independent minibatch noise;
    an over-estimate where it does change). 0-d; NaN for N = 1."""
    if gc.shape[0] < 2:
        return torch.full((), math.nan, device=gc.device, dtype=gc.dtype)
    return 0.5 * (gc[1:] - gc[:-1]).square().mean()


class KernelGradientEstimator:
    """Posterior-mean gradient estimates from the last ``history`` (point, gradient) pairs.

    Life cycle per OptEx iteration: :meth:`begin` (anchor at the iteration's start point, fit
    hyperparameters, cache ``W``), :meth:`query` N-1 times, :meth:`append` the N true pairs.

    Args:
        dim: d, the number of parameters (points are flat ``(d,)`` tensors).
        config: the estimator's options, validated (:class:`~optkit_optex.config.EstimatorConfig`:
            history T0, kernel, fitting rule, coordinate subsamples, noise measurement);
            ``effective_dim`` must be <= ``dim``. With ``effective_dim`` the point buffer is
            ``(T0, effective_dim)`` and a query reads ``T0 (effective_dim + d)`` floats. With
            ``noise_estimate = "spread"`` the noise variance is measured from each round's
            gradients (the spread of the gradients sampled at one point when the caller
            passes it to :meth:`append`, else half the mean squared difference of
            consecutive gradients of the round) and the relative noise is held at
            :func:`~optkit_optex.hyper.relative_noise` of its mean over the last
            :data:`NOISE_ROUNDS` rounds.
        device_solve: compute ``W`` on the device (:meth:`solve_device`, no host
            synchronisation) instead of on the host (off by default here; the ``optex``
            optimizer turns it on for CUDA, where it measured 1.4-2.4x faster per iteration
            on the H200). With it
            :attr:`jitter` and :attr:`fallbacks` describe the solve of the previous iteration
            (read back with the next :meth:`begin`'s snapshot, no extra synchronisation).
        cuda_graph: with ``device_solve`` on CUDA, replay :meth:`append`'s device work from a
            CUDA graph (one per (N, queried rows); the first append of a shape runs eagerly,
            the second captures).
        device / dtype: where the buffers live (the parameters' device and dtype).
    """

    def __init__(
        self,
        dim: int,
        config: EstimatorConfig | None = None,
        *,
        device_solve: bool = False,
        cuda_graph: bool = True,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        config = EstimatorConfig() if config is None else config
        config.check_dim(dim)
        self.config = config
        self.noise_estimate = config.noise_estimate
        self.dim, self.history, self.kernel, self.fit = (
            dim,
            config.history,
            config.kernel,
            config.fit,
        )
        self.device, self.dtype = torch.device(device), dtype
        # lagged fits in the worker thread on CUDA
        self.fitter = HyperFitter(config, background=self.device.type == "cuda")
        t0, seed, effective_dim = config.history, config.seed, config.effective_dim

        def buf(*shape: int) -> torch.Tensor:
            return torch.zeros(*shape, device=self.device, dtype=dtype)

        gen = torch.Generator().manual_seed(seed)
        m = min(config.fit_coords, dim)
        self.coords = torch.randperm(dim, generator=gen)[:m].sort().values.to(self.device)
        # effective_dim: distances on a seeded coordinate subset (None: all coordinates).
        self.dist_coords: torch.Tensor | None = None
        dist_dim = dim
        if effective_dim is not None and effective_dim < dim:
            sub = torch.Generator().manual_seed(seed + 1)
            picked = torch.randperm(dim, generator=sub)[:effective_dim].sort().values
            self.dist_coords = picked.to(self.device)
            dist_dim = effective_dim
        self.dist_dim = dist_dim
        self.X = buf(t0, dist_dim)  # offsets Y_i = X_i - origin (on the distance coordinates)
        self.G = buf(t0, dim)
        # Device-side bookkeeping, all static buffers updated in place (CUDA-graph friendly):
        self.Gc = buf(t0, m)  # G at the fit's coordinates
        self.sqd = buf(t0, t0)  # squared distances between stored points
        self.a = buf(t0)  # squared distances from the anchor
        self.valid_dev = buf(t0)  # 1.0 for a stored slot, 0.0 otherwise
        self.origin = buf(dist_dim)  # X stores offsets from this point
        self.anchor = buf(dist_dim)  # the iteration's start point
        self.anchor_y = buf(dist_dim)  # anchor - origin
        self.pnorm = buf(t0)  # norms of the stored points (fit = "reference" only)
        self._noise_in = buf(1)  # a noise variance the caller measured (static input)
        self.mean_grad = buf(dim)
        # W = (K + s^2 I)^-1 and the squared lengthscale, one buffer: one host-to-device copy.
        self._wl = buf(t0 * t0 + 1)
        self.W = self._wl[: t0 * t0].view(t0, t0)
        self.ls_sq = self._wl[t0 * t0 :]  # (1,): the squared lengthscale as a tensor
        cuda = self.device.type == "cuda"
        self._wl_host = torch.zeros(t0 * t0 + 1, dtype=dtype, pin_memory=cuda)
        self._wl_event = torch.cuda.Event() if cuda else None
        # Device solve: hyperparameters (squared lengthscale, relative noise) in float64 on the
        # device, uploaded without blocking; the ok flag, the solve's (rung, ok) for the
        # host, and the one-hot of the newest slot (the fallback weights).
        self.device_solve = device_solve
        self._hyp = torch.zeros(2, device=self.device, dtype=torch.float64)
        self._hyp_host = torch.zeros(2, dtype=torch.float64, pin_memory=cuda)
        self._hyp_event = torch.cuda.Event() if cuda else None
        self._hyp_sent: Hyper | None = None
        self._ok = torch.zeros(1, device=self.device, dtype=torch.bool)
        self._info = torch.zeros(2, device=self.device, dtype=dtype)  # (rung, ok)
        self._wfb = buf(t0)  # one-hot of the newest slot
        self._jitters = torch.tensor(JITTERS, device=self.device, dtype=torch.float64)
        self._eye64 = torch.eye(t0, device=self.device, dtype=torch.float64)
        self._solved = False  # a device solve ran since the last append
        # Host mirror of (sqd, Gc, point scale, round noise, drift, spread, rung, ok):
        # assembled on the device in _snap_dev and copied device-to-host after every append
        # without blocking; begin() reads it (by then the copy is done).
        self._snap_dev = buf(t0 * t0 + t0 * m + SNAP_TAIL)
        self._snap_host = torch.zeros(t0 * t0 + t0 * m + SNAP_TAIL, dtype=dtype, pin_memory=cuda)
        self._snap_event = torch.cuda.Event() if cuda else None
        self._snap_new = False
        self._snap_solved = False  # the snapshot's (rung, ok) come from a device solve
        # Append: the ring's next slot as a device tensor (advanced in place), CUDA graphs.
        self._start = torch.zeros(1, device=self.device, dtype=torch.long)
        self._arange = torch.arange(t0, device=self.device)
        self.graph_append = cuda_graph and cuda and self.device_solve
        self._append_graphs = KeyedGraphs("append")  # per (N, queried rows, noise given)
        self._append_inputs: dict[tuple[int, int, bool], list[torch.Tensor | None]] = {}
        self._sqdist_host = torch.zeros(t0, t0, dtype=torch.float64)
        self._ys_host = torch.zeros(t0, m, dtype=torch.float64)
        self._drift = self._spread = 0.0
        self._point_scale = 0.0
        self._round_noise: deque[float] = deque(maxlen=NOISE_ROUNDS)
        self._last_slots: list[int] = []  # slots the newest append wrote (fit = "forward")
        self._variances: list[torch.Tensor] = []  # this iteration's query variances
        self._has_origin = False
        self.count = 0  # pairs ever appended
        self.mode: Literal["empty", "mean", "gp"] = "empty"
        self._queried: list[torch.Tensor] = []  # distances of this iteration's queries
        self.iteration = 0
        self.jitter = 0.0
        self.fallbacks = 0

    # ---------------------------------------------------------------------------- properties
    @property
    def size(self) -> int:
        """Number of stored pairs (<= T0); they occupy slots ``0 .. size - 1``."""
        return min(self.count, self.history)

    @property
    def memory_bytes(self) -> int:
        """Bytes of the two ring buffers: exactly ``T0 * (d + d_dist) * itemsize``, with
        ``d_dist = effective_dim`` (``d`` without it)."""
        return self.X.numel() * self.X.element_size() + self.G.numel() * self.G.element_size()

    @property
    def hyper(self) -> Hyper | None:
        """The kernel hyperparameters in use (``None`` before the first fit, or when all
        stored points coincide)."""
        return self.fitter.hyper

    @property
    def sqdist(self) -> torch.Tensor:
        """``(T0, T0)`` float64 CPU table of squared distances between the stored points (the
        host mirror :meth:`begin` fits on; only the ``size x size`` block is meaningful)."""
        self._pull()
        return self._sqdist_host

    # ---------------------------------------------------------------------------- iteration
    @torch.no_grad()
    def begin(self, anchor: torch.Tensor, *, move_anchor: bool = True) -> None:
        """Start an iteration at ``anchor`` (flat ``(d,)``): refit, cache W, move the anchor.

        No device-to-host synchronisation: the fit runs on the host mirror of the distance
        table that the last :meth:`append` sent without blocking. ``move_anchor=False``
        leaves the device work (anchor move and, with ``device_solve``, the solve) to the
        caller (:meth:`device_begin`, e.g. inside a CUDA graph) when the history is not
        empty.
        """
        self.iteration += 1
        self._queried.clear()
        self._variances.clear()
        if self.count == 0:
            self.anchor.copy_(self._dsel(anchor.detach()))
            self.mode = "empty"
            return
        self._pull()
        if self._drift > self._spread:
            # Re-base the stored offsets on the previous anchor (distances are unchanged):
            # keeps |Y| at the trajectory's extent, so rounding stays relative to the
            # distances. Decided on the mirror of the last append (one iteration late), so
            # that no synchronisation is needed.
            self.X[: self.size].sub_(self.anchor_y)
            self.origin.copy_(self.anchor)
            self.anchor_y.zero_()
            self._drift = 0.0
        if move_anchor:
            self.move_anchor(anchor)
        self._solved = False
        size = self.size
        sq = self._sqdist_host[:size, :size]
        solve = self.fitter.update(self.iteration, sq, self._ys_host[:size], self._context())
        self._use_fit(sq, solve, move_anchor=move_anchor)

    def _context(self) -> FitContext:
        """The fit's context: the newest round's slots, the measured noise, the scale."""
        holdout = None
        if self.fit == "forward" and self._last_slots:
            holdout = torch.tensor(self._last_slots, dtype=torch.long)
        noise_var = None
        if self.noise_estimate == "spread" and self._round_noise:
            noise_var = sum(self._round_noise) / len(self._round_noise)
        return FitContext(holdout=holdout, noise_var=noise_var, point_scale=self._point_scale)

    def _dsel(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(..., d)`` on the distance coordinates (``effective_dim``), else ``x``."""
        if self.dist_coords is None:
            return x
        return x.index_select(-1, self.dist_coords)

    def _use_fit(self, sq: torch.Tensor, solve: torch.Tensor | None, *, move_anchor: bool) -> None:
        """Put the current fit to use: the mean fallback, the device solve's inputs, the
        fit's own ``W`` ``(n, n)`` (``solve``) or a host solve on ``sq`` ``(n, n)``."""
        size = sq.shape[0]
        if self.hyper is None:
            self._use_mean(size)
            return
        if self.device_solve:  # W on the device, in device_begin (maybe in a CUDA graph)
            self._upload_hyper(self.hyper)
            self.mode = "gp"
            self._solved = True
            if move_anchor:
                self.solve_device()
            return
        if solve is not None and solve.shape[0] == size:
            self._upload(solve, self.hyper.lengthscale)
            self.jitter = 0.0
            self.mode = "gp"
            return
        self._cache_weights(sq, size, self.hyper)

    @torch.no_grad()
    def device_begin(self, anchor: torch.Tensor, *, solve: bool = True) -> None:
        """:meth:`begin`'s device work after ``begin(..., move_anchor=False)``: the anchor
        move and, with ``device_solve`` in ``"gp"`` mode (and ``solve``), the solve. Static
        buffers only, no host synchronisation (capturable in a CUDA graph)."""
        self.move_anchor(anchor)
        if solve and self.device_solve and self.mode == "gp":
            self.solve_device()

    @torch.no_grad()
    def move_anchor(self, anchor: torch.Tensor) -> None:
        """Anchor the distance formula at ``anchor`` (flat ``(d,)``): one product over X,
        device only, in place (capturable in a CUDA graph)."""
        anchor = self._dsel(anchor.detach())
        v = anchor.to(self.dtype) - self.anchor
        self.a.copy_(self._sqdist_to(v, torch.mv(self.X, v)) * self.valid_dev)
        self.anchor.copy_(anchor)
        torch.sub(self.anchor, self.origin, out=self.anchor_y)

    @torch.no_grad()
    def query(self, x: torch.Tensor) -> torch.Tensor:
        """``mu(x)``, shape ``(d,)``, for a flat point ``x`` of shape ``(d,)``."""
        if self.mode == "empty":
            return torch.zeros_like(self.mean_grad)
        if self.mode == "mean":
            return self.mean_grad.clone()
        var = torch.zeros(1, device=self.device, dtype=self.dtype)
        sq, mu = self._gp_query(x, None, None, var)
        self._queried.append(sq)  # reused by append: no second pass over X for x
        self._variances.append(var)
        return mu

    def last_variance(self) -> float:
        """The relative posterior variance ``1 - k(x, X) W k(X, x)`` (in [0, 1], 1 = the
        prior's) at the newest :meth:`query` point of this iteration; 0 outside ``"gp"``
        mode (no kernel: nothing to distrust). One host read."""
        return float(self._variances[-1]) if self._variances else 0.0

    @torch.no_grad()
    def query_into(
        self,
        x: torch.Tensor,
        sq_out: torch.Tensor,
        mu_out: torch.Tensor,
        var_out: torch.Tensor | None = None,
    ) -> None:
        """:meth:`query` into static buffers: ``mu(x)`` into ``mu_out`` ``(d,)`` and, in
        ``"gp"`` mode, the squared distances to the stored points into ``sq_out`` ``(T0,)``
        and (when given) the relative posterior variance into ``var_out`` ``(1,)`` (0 in the
        other modes). Reads only static buffers, so it can be captured in a CUDA graph."""
        if self.mode == "empty":
            mu_out.zero_()
        elif self.mode == "mean":
            mu_out.copy_(self.mean_grad)
        else:
            self._gp_query(x, sq_out, mu_out, var_out)
            return
        if var_out is not None:
            var_out.zero_()

    def queried_distances(self) -> torch.Tensor | None:
        """``(k, T0)`` distances of this iteration's :meth:`query` points (in call order), or
        ``None``: pass them to :meth:`append` when its first k points are those points."""
        return torch.stack(self._queried) if self._queried else None

    @torch.no_grad()
    def append(
        self,
        points: torch.Tensor,
        grads: torch.Tensor,
        iteration: int,
        *,
        queried: torch.Tensor | None = None,
        check_finite: bool = True,
        noise_var: torch.Tensor | None = None,
    ) -> None:
        """Add N pairs (``points``, ``grads``: ``(N, d)``); the oldest pairs drop out.

        ``noise_var``: a ``(1,)`` (or 0-d) tensor, the per-coordinate noise variance of
        ``grads`` as the caller measured it (e.g. from several minibatch gradients at one
        point); used with ``noise_estimate = "spread"``, where otherwise the round's own
        spread is measured.

        ``queried``: ``(k, T0)`` squared distances from ``points[:k]`` to the stored points
        as this iteration's queries computed them (:meth:`queried_distances`, or the
        ``sq_out`` rows of :meth:`query_into`); the other rows take one product over X.
        Ring-buffer writes with ``index_copy_``, no host synchronisation unless
        ``check_finite`` (callers whose gradients the oracle already checked pass False).

        Raises:
            DivergenceError: a gradient holds NaN or inf (naming ``iteration``); nothing is
                stored then.
        """
        if points.shape != grads.shape or points.dim() != 2 or points.shape[1] != self.dim:
            raise ValueError(
                f"append needs points and grads of shape (N, {self.dim}), got"
                f" {tuple(points.shape)} and {tuple(grads.shape)}"
            )
        if check_finite:
            finite = torch.isfinite(grads).all(dim=1)
            if not bool(finite.all()):
                bad = int((~finite).nonzero()[0])
                raise DivergenceError(
                    f"optex: non-finite gradient at point {bad} of iteration {iteration};"
                    " refusing to store it in the estimator's history"
                )
        if points.shape[0] > self.history:
            points, grads, queried = points[-self.history :], grads[-self.history :], None
        points = points.detach().to(self.dtype)
        grads = grads.detach().to(self.dtype)
        n = points.shape[0]
        if not self._has_origin:
            self.origin.copy_(self._dsel(points[0]))
            self._has_origin = True
        if self.count == 0:
            self.anchor.copy_(self._dsel(points[0]))
            torch.sub(self.anchor, self.origin, out=self.anchor_y)
            self.a.zero_()
        k = 0 if queried is None or self.mode != "gp" else min(queried.shape[0], n)
        q = queried[:k].to(self.dtype) if queried is not None and k else None
        given = noise_var is not None and self.noise_estimate == "spread"
        if given:
            assert noise_var is not None
            self._noise_in.copy_(noise_var.detach().reshape(1))
        self._last_slots = [(self.count + i) % self.history for i in range(n)]
        if self.graph_append and self.count > 0:
            self._append_graphed(points, grads, q, (n, k, given))
        else:
            self._append_device(points, grads, q, given)
        self._snap_solved = self._solved
        self._solved = False
        self._queried.clear()
        self.count += n
        self._push()

    # ---------------------------------------------------------------------------- internals
    def _append_device(
        self,
        points: torch.Tensor,
        grads: torch.Tensor,
        queried: torch.Tensor | None,
        noise_given: bool = False,
    ) -> None:
        """:meth:`append`'s device work (static buffers, ring slots from the device counter
        ``_start``): distances, ring writes, the fallback one-hot and the snapshot."""
        t0, n = self.history, points.shape[0]
        k = 0 if queried is None else queried.shape[0]
        full = points
        points = self._dsel(points)
        vs = points - self.anchor  # (N, d), small: within a few steps of the anchor
        vv = (vs * vs).sum(1)
        rows = [queried] if queried is not None else []
        if k < n:
            rest = vs[k:]
            if n - k == 1:  # the usual case (the proxy points' distances are queried): a
                old = torch.mv(self.X, rest[0])[None]  # gemv reads X at full bandwidth
            else:
                old = torch.mm(rest, self.X.T)  # (N - k, T0): Y_i . v_j
            cv = torch.mv(rest, self.anchor_y)
            rows.append((self.a[None, :] + vv[k:, None] - 2.0 * (old - cv[:, None])).clamp_min(0))
        to_old = rows[0] if len(rows) == 1 else torch.cat(rows)
        among = (vv[:, None] + vv[None, :] - 2.0 * row_gram(vs)).clamp_min(0.0)
        among.fill_diagonal_(0.0)
        slots = (self._start + self._arange[:n]) % t0
        self.sqd.index_copy_(0, slots, to_old)
        self.sqd.index_copy_(1, slots, to_old.T.contiguous())
        self.sqd.index_put_((slots[:, None], slots[None, :]), among)
        self.X.index_copy_(0, slots, points - self.origin)
        self.G.index_copy_(0, slots, grads)
        gc = grads.index_select(1, self.coords)
        self.Gc.index_copy_(0, slots, gc)
        self.a.index_copy_(0, slots, vv)
        self.valid_dev.index_fill_(0, slots, 1.0)
        self._wfb.zero_()
        self._wfb.index_fill_(0, slots[n - 1 :], 1.0)
        self._start.add_(n).remainder_(t0)
        m = self.Gc.shape[1]
        snap = self._snap_dev
        snap[: t0 * t0].copy_(self.sqd.reshape(-1))
        snap[t0 * t0 : t0 * t0 + t0 * m].copy_(self.Gc.reshape(-1))
        snap[-4:-2].copy_(torch.stack([torch.dot(self.anchor_y, self.anchor_y), self.a.max()]))
        snap[-2:].copy_(self._info)
        if self.fit == "reference":  # the mean norm of the stored points
            self.pnorm.index_copy_(0, slots, torch.linalg.vector_norm(full, dim=1))
            snap[-6].copy_((self.pnorm * self.valid_dev).sum() / self.valid_dev.sum())
        if noise_given:
            snap[-5].copy_(self._noise_in[0])
        elif self.noise_estimate == "spread":  # consecutive differences of the round (NaN: N = 1)
            snap[-5].copy_(round_spread(gc))

    def _append_graphed(
        self,
        points: torch.Tensor,
        grads: torch.Tensor,
        queried: torch.Tensor | None,
        key: tuple[int, int, bool],
    ) -> None:
        """:meth:`_append_device` on static copies of its inputs (one set per ``key = (N,
        k, noise given)``), replayed from a CUDA graph per key (:class:`KeyedGraphs`: eager
        the first time, captured the second; eager from then on after a failed capture)."""
        inputs = self._append_inputs.get(key)
        given = key[2]
        if inputs is None:
            inputs = [points.clone(), grads.clone(), None if queried is None else queried.clone()]
            self._append_inputs[key] = inputs
        else:
            for static, value in zip(inputs, (points, grads, queried), strict=True):
                if static is not None and value is not None:
                    static.copy_(value)
        p_in, g_in, q_in = inputs
        assert p_in is not None and g_in is not None
        self._append_graphs.run(key, lambda: self._append_device(p_in, g_in, q_in, given))

    @property
    def append_graph_failed(self) -> bool:
        """A capture of :meth:`append` failed: appends run eagerly from then on."""
        return self._append_graphs.failed

    def _upload_hyper(self, hyper: Hyper) -> None:
        """(squared lengthscale, relative noise) to the device in float64, without blocking
        (only when they changed)."""
        if hyper == self._hyp_sent:
            return
        if self._hyp_event is not None:
            self._hyp_event.synchronize()  # the previous upload has left the pinned buffer
        self._hyp_host[0] = hyper.lengthscale * hyper.lengthscale
        self._hyp_host[1] = hyper.noise
        self._hyp.copy_(self._hyp_host, non_blocking=self._hyp_event is not None)
        if self._hyp_event is not None:
            self._hyp_event.record()
        self._hyp_sent = hyper

    def solve_device(self) -> None:
        """W = (K + noise I)^-1 on the device, branchless and without host synchronisation.

        The host ladder of :meth:`_cache_weights` in one batch: ``K`` (float64) from ``sqd``
        over the valid slots (invalid slots get identity rows/columns, so every matrix stays
        positive definite and W is zero there), ``A_j = K + noise I + JITTERS[j] * mean
        diag(A) I`` for all rungs j, ``cholesky_ex`` without error check, the inverse by two
        triangular solves, rung ok = (info == 0) & all finite; W is the first ok rung's
        inverse (zero if none) and ``_ok`` says whether one was; the queries then use the
        newest gradient instead (``_wfb``). ``_info`` = (rung index, ok) for the host."""
        f64 = torch.float64
        ls_sq, noise = self._hyp[0], self._hyp[1]
        kmat = kernel_spec(self.kernel).closed_form(self.sqd.to(f64).clamp_min(0.0) / ls_sq)
        w, any_ok, rung = device_inverse(
            kmat, self.valid_dev.to(f64), noise, self._jitters, self._eye64
        )
        self.W.copy_(w)
        self._ok.copy_(any_ok.view(1))
        self.ls_sq.copy_(ls_sq)
        self._info.copy_(torch.cat([rung.to(f64), any_ok.to(f64).view(1)]))

    def _gp_query(
        self,
        x: torch.Tensor,
        sq_out: torch.Tensor | None,
        mu_out: torch.Tensor | None,
        var_out: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        v = self._dsel(x.detach()).to(self.dtype) - self.anchor
        sq = self._sqdist_to(v, torch.mv(self.X, v))
        if sq_out is not None:
            sq_out.copy_(sq)
        kvec = evaluate_sq(self.kernel, sq, 1.0, ls_sq=self.ls_sq)
        w = torch.mv(self.W, kvec)
        if var_out is not None:  # 1 - k W k: the posterior variance relative to the prior's
            var = (1.0 - torch.dot(kvec, w)).clamp(0.0, 1.0).reshape(1)
            if self.device_solve:  # no rung succeeded: no trust in the estimate
                var = torch.where(self._ok, var, torch.ones_like(var))
            var_out.copy_(var)
        if self.device_solve:  # no rung succeeded: the newest gradient, G^T e_newest
            w = torch.where(self._ok, w, self._wfb)
        if mu_out is None:
            return sq, torch.mv(self.G.T, w)
        torch.mv(self.G.T, w, out=mu_out)
        return sq, mu_out

    def _sqdist_to(self, v: torch.Tensor, xv: torch.Tensor) -> torch.Tensor:
        """Squared distances ``(T0,)`` from ``anchor + v`` to the stored points, given
        ``xv = X v``."""
        cv = torch.dot(self.anchor_y, v)
        return (self.a + torch.dot(v, v) - 2.0 * (xv - cv)).clamp_min(0.0)

    def _push(self) -> None:
        """Send the device snapshot (sqd, Gc, drift, spread, rung, ok) to the host mirror
        without blocking."""
        self._snap_host.copy_(self._snap_dev, non_blocking=self._snap_event is not None)
        if self._snap_event is not None:
            self._snap_event.record()
        self._snap_new = True

    def _pull(self) -> None:
        """Refresh the float64 host tables from the mirror (waits for its copy only); with a
        device solve in the snapshot, set :attr:`jitter` and count a fallback."""
        if not self._snap_new:
            return
        if self._snap_event is not None:
            self._snap_event.synchronize()
        host = self._snap_host.to(torch.float64, copy=True)
        t0 = self.history
        self._sqdist_host = host[: t0 * t0].view(t0, t0).clone()
        self._ys_host = host[t0 * t0 : -SNAP_TAIL].view(t0, -1).clone()
        scale, noise_var, self._drift, self._spread, rung, ok = host[-SNAP_TAIL:].tolist()
        self._point_scale = scale
        if self.noise_estimate == "spread" and math.isfinite(noise_var) and noise_var >= 0:
            self._round_noise.append(noise_var)
        if self._snap_solved:
            self.jitter = JITTERS[int(rung)] if ok else 0.0
            self.fallbacks += int(ok == 0.0)
            self._snap_solved = False
        self._snap_new = False

    def _use_mean(self, size: int) -> None:
        """The average of the stored gradients (the GP mean as lengthscale -> inf): the
        fallback when the stored points coincide, and every estimate with ``fit = "mean"``."""
        self.mode = "mean"
        torch.mean(self.G[:size], 0, out=self.mean_grad)

    def _cache_weights(self, sq: torch.Tensor, size: int, hyper: Hyper) -> None:
        """W = (K + noise I)^-1 over the stored slots (host, float64), with the jitter ladder,
        sent to the device without blocking; falls back to the newest gradient if every
        rung fails."""
        solved = host_inverse(evaluate_sq(self.kernel, sq, hyper.lengthscale), hyper.noise)
        if solved is not None:
            self._upload(solved[0], hyper.lengthscale)
            self.jitter = solved[1]
            self.mode = "gp"
            return
        self.fallbacks += 1
        self.mode = "mean"
        self.mean_grad.copy_(self.G[(self.count - 1) % self.history])

    def _upload(self, inv: torch.Tensor, lengthscale: float) -> None:
        """W (zero outside the ``size x size`` block) and the squared lengthscale to the
        device."""
        t0, size = self.history, inv.shape[0]
        if self._wl_event is not None:
            self._wl_event.synchronize()  # the previous upload has left the pinned buffer
        host = self._wl_host
        host.zero_()
        host[: t0 * t0].view(t0, t0)[:size, :size] = inv
        host[-1] = lengthscale * lengthscale  # squared in float64, like a float argument
        self._wl.copy_(host, non_blocking=self._wl_event is not None)
        if self._wl_event is not None:
            self._wl_event.record()
