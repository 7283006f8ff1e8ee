"""The one OptEx engine: a functional core over flat ``(d,)`` points.

In the spirit of optax's ``GradientTransformation``: :meth:`Engine.init` builds the state from
the flat start point, and one iteration is two calls around the caller's parallel round::

    state = engine.init(x0, rule)                # x0: (d,); rule: the base rule's factory
    for _ in range(iterations):
        planned = engine.plan(x, state)           # planned.points: (P, d), P <= N
        # evaluate planned.workers() = N x K gradients: the rows of planned.expanded()
        x, state, info = engine.update(state, planned, grads, losses)  # (W, d), (W,)

The registered ``optex`` optimizer (:mod:`optkit_optex.optimizer`, through an
:class:`~optkit.oracle.Oracle`), the ``torch.optim`` drop-in ``optkit.OptEx``
(:mod:`optkit_optex.torch_api`: a closure N times, or one ``vmap``) and the fused CUDA-graph
path all run this engine; they differ only in the base rule (:mod:`optkit_optex.rules`) and
in how they evaluate the round. The state holds static buffers that the calls update in place
(so that the proxy loop can be replayed from a CUDA graph); the calls return it.

One iteration with parallelism N (Shu et al., arXiv 2402.11427, Alg. 1), from ``theta_0``:

1. :meth:`Engine.plan`: fit the kernel gradient estimator on the history and cache its solve
   (:meth:`KernelGradientEstimator.begin`); then the *proxy body*: N-1 proxy steps of the base
   rule in sequence, each fed the estimate at the current proxy point, the points into the
   static ``(N, d)`` buffer ``P``. On CUDA, with a graphable rule, the body is captured once in
   a ``torch.cuda.CUDAGraph`` (with the estimator's device solve) and replayed; on the CPU,
   or when capture fails (logged once), the same body runs eagerly. With ``stop_variance``
   the trajectory ends at the first point whose relative posterior variance exceeds it (one
   read of the N-1 variances), and the workers of the points not reached evaluate the last
   point (:mod:`optkit_optex.rounds`).
2. the caller evaluates ``N x batches_per_point`` gradients (one parallel round);
3. :meth:`Engine.update`: the per-point means enter the history; the next iterate is the true
   base step from the point with the lowest observed loss (``next_iterate = "best"``, the
   default) or from the last point (``"last"``, the released rule). Only that true step is
   computed.

With an empty history (the first iteration) there is no estimate: all N points are
``theta_0`` and the iteration is one true step.

The split of a round's W workers into P points x K batches is the state's (:attr:`EngineState.n`,
:attr:`EngineState.k`): the config's, or with ``batches_per_point = "auto"`` first (1, W) for
the measuring rounds, then the split :mod:`optkit_optex.auto_split` chooses (the point
buffers are sized for any split of W, so the front ends' views of them stay valid).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from optkit_optex.auto_split import NoiseMeter, choose_batches_per_point
from optkit_optex.config import OptExConfig
from optkit_optex.estimator import KernelGradientEstimator
from optkit_optex.rounds import even_counts, group_counts, group_mean, within_noise
from optkit_optex.rules import FlatRule, RuleFactory

log = logging.getLogger(__name__)


@dataclass
class EngineState:
    """The estimator (history), the base rule (its state), the static buffers of one
    iteration and the proxy loop's CUDA graph.

    Buffers: ``P`` ``(R, d)`` the iteration's points (R = N, or W with ``"auto"``: room for
    any split), ``SQ`` ``(R-1, T0)`` the queried squared distances, ``VAR`` ``(R-1,)`` the
    relative posterior variances (``stop_variance`` only).

    ``n`` / ``k``: the current split, P points x K batches per point. ``meter``: the noise
    measurement of ``batches_per_point = "auto"`` until the split is chosen (then ``None``);
    ``noise_scale``: what it measured (``B_simple / batch``; NaN before).
    """

    estimator: KernelGradientEstimator
    rule: FlatRule
    P: torch.Tensor
    SQ: torch.Tensor
    VAR: torch.Tensor | None
    n: int = 1
    k: int = 1
    limit: int = 0  # ``adaptive_points``: the most points the next round may have
    meter: NoiseMeter | None = None
    noise_scale: float = float("nan")
    iteration: int = 0
    use_graph: bool = False
    graph: Any = None  # torch.cuda.CUDAGraph once captured
    graph_failed: bool = False
    solve_in_graph: bool = True  # the graph holds the estimator's device solve
    replays: int = 0


@dataclass(frozen=True)
class Round:
    """What :meth:`Engine.plan` asks the caller to evaluate.

    Attributes:
        points: ``(P, d)`` the trajectory's points (views of the state's ``P``; valid until
            the next :meth:`Engine.plan`), ``P <= N`` (fewer when ``stop_variance`` stopped
            the trajectory).
        counts: workers per point (``batches_per_point`` each, the workers of the points not
            reached added to the last; with ``adaptive_points`` the W workers shared out
            evenly), summing to ``W = N x batches_per_point``.
        ran: proxy steps were taken (the history held an estimate and N > 1).
        index: ``(W,)`` the point of each evaluation (``counts`` expanded).
    """

    points: torch.Tensor
    counts: list[int]
    ran: bool
    index: list[int] = field(init=False)

    def __post_init__(self) -> None:
        index = [i for i, c in enumerate(self.counts) for _ in range(c)]
        object.__setattr__(self, "index", index)

    def workers(self) -> int:
        """W, the gradients to evaluate."""
        return len(self.index)

    def expanded(self) -> torch.Tensor:
        """``(W, d)``: row ``i`` is the point of the ``i``-th evaluation (the points of one
        point's workers consecutive, in trajectory order)."""
        if len(self.index) == self.points.shape[0]:
            return self.points
        return self.points[self.index]


@dataclass(frozen=True)
class IterationInfo:
    """What one :meth:`Engine.update` saw.

    Attributes:
        loss: the mean observed loss at the start point.
        losses: the mean observed loss at each point of the round.
        chosen: the point the true step started from.
        extras: the ``optex_*`` numbers of :class:`~optkit.interfaces.StepInfo`.
    """

    loss: float
    losses: list[float]
    chosen: int
    extras: dict[str, float]


class Engine:
    """OptEx's iteration over flat points (see the module docstring).

    Args:
        config: the iteration's and the estimator's options.
        device_solve: the estimator's solve on the device (``"auto"``: on CUDA).
        cuda_graph: on CUDA, with a graphable rule, capture the proxy body (and the
            estimator's append, with the device solve) in CUDA graphs.
        check_finite: :meth:`update` refuses a non-finite gradient (one host read;
            callers whose gradients an :class:`~optkit.oracle.Oracle` checked pass False).
    """

    def __init__(
        self,
        config: OptExConfig,
        *,
        device_solve: bool | Literal["auto"] = "auto",
        cuda_graph: bool = True,
        check_finite: bool = False,
    ) -> None:
        self.config = config
        self.device_solve, self.cuda_graph = device_solve, cuda_graph
        self.check_finite = check_finite

    def init(self, x0: torch.Tensor, rule: RuleFactory) -> EngineState:
        """The state of a run from ``x0`` ``(d,)`` (its device and dtype are the run's),
        with the base rule ``rule(x0, config)``.

        Raises:
            ConfigError: ``effective_dim`` larger than d.
        """
        cfg = self.config
        n, k = cfg.split
        rows = cfg.round_size if cfg.auto else n  # room for every split of W
        x0 = x0.detach()
        cuda = x0.device.type == "cuda"
        estimator = KernelGradientEstimator(
            x0.numel(),
            cfg.estimator,
            device=x0.device,
            dtype=x0.dtype,
            device_solve=cuda if self.device_solve == "auto" else self.device_solve,
            cuda_graph=self.cuda_graph,
        )
        made = rule(x0, cfg)

        def buf(*shape: int) -> torch.Tensor:
            return torch.zeros(*shape, device=x0.device, dtype=x0.dtype)

        return EngineState(
            estimator,
            made,
            P=buf(rows, x0.numel()),
            SQ=buf(max(rows - 1, 1), cfg.estimator.history),
            VAR=buf(max(rows - 1, 1)) if cfg.stop_variance is not None else None,
            n=n,
            k=k,
            meter=NoiseMeter(cfg.round_size) if cfg.auto else None,
            use_graph=self.cuda_graph and cuda and made.graphable,
        )

    # ------------------------------------------------------------------------------ plan
    @torch.no_grad()
    def plan(self, x: torch.Tensor, state: EngineState) -> Round:
        """Start an iteration at ``x`` ``(d,)``: fit, then the proxy trajectory. No host
        synchronisation besides one read of the N-1 variances with ``stop_variance``."""
        est, n, P = state.estimator, state.n, state.P
        state.iteration += 1
        P[0].copy_(x)
        est.begin(P[0], move_anchor=n == 1)
        ran = est.mode != "empty" and n > 1
        if ran:
            self.proxy(state)
        else:
            P[1:n].copy_(P[0].expand(n - 1, -1))
        last = n - 1
        if ran and state.VAR is not None and est.mode == "gp":
            last = self._stop_index(state.VAR[: n - 1].tolist(), n)
        if self.config.adaptive_points and ran:
            last = min(last, (state.limit or n) - 1)
            return Round(P[: last + 1], even_counts(last + 1, n * state.k), ran)
        counts = group_counts(last + 1, n, state.k)
        return Round(P[: last + 1], counts, ran)

    def _stop_index(self, variances: list[float], n: int) -> int:
        """The last point of the proxy trajectory: the first queried point whose variance
        exceeds ``stop_variance`` (its estimate is not trusted, so no step is taken from
        it), else N - 1 (N = ``n``). ``variances[i]``: at point i, i < N - 1."""
        threshold = self.config.stop_variance
        assert threshold is not None
        for i, var in enumerate(variances):
            if var > threshold:
                return i
        return n - 1

    @torch.no_grad()
    def body(self, state: EngineState, *, solve: bool = True) -> None:
        """The proxy body: anchor at ``P[0]`` (and the device solve unless ``solve=False``),
        then N-1 times [estimate at the proxy point into the rule's gradient buffer (its
        squared distances into ``SQ``, its variance into ``VAR``), one proxy step, the point
        into ``P``], from the true state (saved at each point when ``saves_states``). With a
        graphable rule it touches static tensors only."""
        est, rule, P = state.estimator, state.rule, state.P
        save = self.config.saves_states
        est.device_begin(P[0], solve=solve)
        rule.start(P[0])
        for s in range(1, state.n):
            if save:
                rule.save(s - 1)
            var = None if state.VAR is None else state.VAR[s - 1 : s]
            est.query_into(rule.point, state.SQ[s - 1], rule.grad, var)
            rule.step()
            P[s].copy_(rule.point)

    def proxy(self, state: EngineState) -> None:
        """The proxy body of this iteration (after ``estimator.begin(P[0],
        move_anchor=False)``, as :meth:`plan` does): replayed from the CUDA graph in ``"gp"``
        mode with a graphable rule on CUDA (captured the first time), eager otherwise."""
        est = state.estimator
        if state.graph is None:  # cheap; never touches tensors a captured graph reads
            state.rule.prepare()
        if not (state.use_graph and est.mode == "gp" and not state.graph_failed):
            self.body(state)
            return
        if state.graph is not None:
            if not state.solve_in_graph and est.device_solve:
                est.solve_device()  # eagerly, before the replay (independent of the anchor)
            state.graph.replay()
            state.replays += 1
            return
        # First "gp" iteration: warm up on a side stream (this run's real result; it also
        # creates lazy state such as cuBLAS workspaces), then capture. The body is
        # idempotent (re-anchoring at the same point, re-stepping from the same true
        # state), so later replays start from the state it expects.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.body(state)
        torch.cuda.current_stream().wait_stream(side)
        for solve in (True, False) if est.device_solve else (True,):
            try:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    self.body(state, solve=solve)
                state.graph, state.solve_in_graph = graph, solve
                return
            except Exception as err:  # a capture failure: without the solve, then eager
                what = "the proxy loop" + (" with the device solve" if solve else "")
                log.warning("optex: CUDA graph capture of %s failed (%r)", what, err)
        state.graph_failed = True
        log.warning("optex: the proxy loop runs eagerly")

    # ------------------------------------------------------------------------------ update
    @torch.no_grad()
    def update(
        self, state: EngineState, planned: Round, grads: torch.Tensor, losses: torch.Tensor
    ) -> tuple[torch.Tensor, EngineState, IterationInfo]:
        """Consume the round :meth:`plan` returned: ``grads`` ``(W, d)`` and ``losses``
        ``(W,)``, row ``i`` at ``planned.expanded()[i]``. The per-point means enter the
        history (the spread within a point is the noise measurement of ``noise_estimate =
        "spread"``), then the true base step from the chosen point. Returns the next iterate,
        a fresh ``(d,)`` tensor.

        Raises:
            DivergenceError: with ``check_finite``, a non-finite gradient (nothing stored).
        """
        est, n, counts = state.estimator, state.n, planned.counts
        per_point = group_mean(losses, counts).tolist()
        means = group_mean(grads, counts)
        last = len(counts) - 1
        noise_var = None
        if est.noise_estimate == "spread":
            noise_var = within_noise(grads.index_select(1, est.coords), counts)
        est.append(
            planned.points,
            means,
            iteration=state.iteration,
            queried=state.SQ[: min(last + 1, n - 1)] if planned.ran and est.mode == "gp" else None,
            check_finite=self.check_finite,
            noise_var=noise_var,
        )
        if self.config.next_iterate == "last":
            j = last
        else:
            j = min(range(last + 1), key=per_point.__getitem__)
        if self.config.adaptive_points and planned.ran:
            state.limit = min(n, max(2, j + 2))  # one point past the chosen one
        new = state.rule.true_step(
            j,
            state.P[j],
            means[j],
            from_proxy=planned.ran and self.config.proxy_updates_state,
            graphed=state.graph is not None,
        )
        numbers = extras(est, j, per_point, state)
        if state.meter is not None:
            self._measure(state, grads)
        return new, state, IterationInfo(per_point[0], per_point, j, numbers)

    @staticmethod
    def _measure(state: EngineState, grads: torch.Tensor) -> None:
        """``batches_per_point = "auto"``: add a measuring round's ``(W, d)`` gradients (all
        at one point) to the meter; after the last one, choose K from the noise scale and
        re-split (P = W / K; the rule keeps its state, the history its pairs)."""
        meter = state.meter
        assert meter is not None
        if meter.workers >= 2:
            meter.add(grads)
        if meter.workers >= 2 and not meter.done:
            return
        state.noise_scale = meter.noise_scale()
        k = choose_batches_per_point(state.noise_scale, meter.workers)
        state.n, state.k, state.meter = meter.workers // k, k, None
        state.rule.resize(state.n)
        log.info(
            "optex: batches_per_point = 'auto': noise scale %.3g minibatches -> %d points x %d",
            state.noise_scale,
            state.n,
            state.k,
        )


def extras(
    est: KernelGradientEstimator, j: int, losses: list[float], state: EngineState
) -> dict[str, float]:
    """The ``optex_*`` numbers of an iteration that chose point ``j`` of ``losses``, with the
    split it ran (``optex_batches_per_point``) and the measured noise scale of
    ``batches_per_point = "auto"`` (``optex_noise_scale``, B_simple / batch; NaN before the
    measurement and without ``"auto"``)."""
    hyper = est.hyper
    return {
        "optex_chosen": float(j),
        "optex_history": float(est.size),
        "optex_fallbacks": float(est.fallbacks),
        "optex_jitter": est.jitter,
        "optex_lengthscale": hyper.lengthscale if hyper else float("nan"),
        "optex_noise": hyper.noise if hyper else float("nan"),
        "optex_min_loss": min(losses),
        "optex_points": float(len(losses)),
        "optex_batches_per_point": float(state.k),
        "optex_noise_scale": state.noise_scale,
    }
