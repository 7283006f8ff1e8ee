"""The fused proxy loop: OptEx's N-1 proxy steps on ONE flat ``(d,)`` tensor.

When the base optimizer is a ``torch.optim``-backed rule with an elementwise update (SGD,
Adam, AdamW, Adamax, RMSprop, Adagrad, ...; :func:`flat_rule_supported`), the rule runs on a
single flat parameter with torch's own implementation (``fused`` and ``capturable`` on
CUDA where torch has them): no per-step dict flatten/unflatten, no per-step clones. Two
``torch.optim`` instances of the base's class share the rule:

* the *true* one over ``tslot``: its state is the base optimizer's state across iterations;
* the *proxy* one over ``pslot``: each iteration starts from a copy of the true state
  (in place, static tensors) and takes the N-1 proxy steps on estimated gradients.

One proxy *body* (:meth:`FlatProxy.body`): the estimator's device work of ``begin``
(:meth:`KernelGradientEstimator.device_begin`: anchor move to ``P[0]`` and, with
``device_solve``, the solve of W), copy the
true state into the proxy optimizer, then N-1 times [estimator query into a static gradient
buffer, proxy step, record the point in ``P[s]``] (and, for ``next_iterate = "best"`` with
``proxy_updates_state``, the state at each proxy point). Every tensor it touches is a static
buffer, so on CUDA the body is captured once in a ``torch.cuda.CUDAGraph`` (per optimizer
state, i.e. per shape and N) and replayed each iteration; on the CPU, or when capture fails
(logged once), the very same body runs eagerly.

The true step (:meth:`FlatProxy.true_step`) copies the proxy state at the chosen point into
the true optimizer when ``proxy_updates_state`` (the released behaviour) and steps it on the
true gradient: exactly the generic loop's semantics.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import torch
from optkit_baselines.torch_optim import TorchOptimizer

from optkit.interfaces import FirstOrderOptimizer
from optkit_optex.estimator import KernelGradientEstimator
from optkit_optex.graphs import KeyedGraphs

log = logging.getLogger(__name__)

ELEMENTWISE: tuple[type[torch.optim.Optimizer], ...] = (
    torch.optim.SGD,
    torch.optim.Adam,
    torch.optim.AdamW,
    torch.optim.Adamax,
    torch.optim.RMSprop,
    torch.optim.Adagrad,
    torch.optim.NAdam,
    torch.optim.RAdam,
    torch.optim.Adadelta,
)
"""``torch.optim`` classes whose update is elementwise: one flat parameter gives the same
update as the per-tensor parameters (Adafactor or Muon, which look at matrix shapes, are
not here)."""

FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def flat_rule_supported(base: FirstOrderOptimizer) -> bool:
    """Whether ``base`` is a plain :class:`TorchOptimizer` (update and state not overridden)
    around an elementwise ``torch.optim`` class."""
    return (
        isinstance(base, TorchOptimizer)
        and type(base).update is TorchOptimizer.update
        and type(base).init is TorchOptimizer.init
        and base.torch_class in ELEMENTWISE
    )


def implementation_kwargs(
    cls: type[torch.optim.Optimizer], device: torch.device, dtype: torch.dtype
) -> dict[str, Any]:
    """On CUDA: ``capturable=True`` where the class has it and ``fused=True`` where it has a
    fused kernel (one kernel per step instead of ~10). Elsewhere torch's default
    implementation, the one the generic path uses, so the two paths agree bit for bit
    (torch's fused CPU kernels round differently, and the GP estimate amplifies a 1-ulp
    difference within a few iterations). torch's own update rule either way."""
    params = inspect.signature(cls.__init__).parameters
    out: dict[str, Any] = {}
    if device.type != "cuda":
        return out
    if "capturable" in params:
        out["capturable"] = True
    if "fused" in params and cls is not torch.optim.Adagrad and dtype in FUSED_DTYPES:
        out["fused"] = True
    return out


def graphable(cls: type[torch.optim.Optimizer], device: torch.device) -> bool:
    """A step can be captured in a CUDA graph: its step counter lives on the device
    (``capturable``) or it has none (SGD)."""
    params = inspect.signature(cls.__init__).parameters
    return device.type == "cuda" and ("capturable" in params or cls is torch.optim.SGD)


class FlatProxy:
    """Static buffers, the two flat ``torch.optim`` instances and the (optional) CUDA graph
    of the proxy body for one OptEx run.

    Args:
        base: the :class:`TorchOptimizer` base (its class and keyword config are used).
        x0: flat ``(d,)`` start point. n: parallelism N. t0: the estimator's history.
        save_states: keep the proxy state at each proxy point (``next_iterate = "best"``
            with ``proxy_updates_state``).
        cuda_graph: capture the body on CUDA (ignored elsewhere).
        track_variance: record the estimate's relative posterior variance at each queried
            point in ``VAR`` ``(N-1,)`` (for ``stop_variance``).

    Buffers: ``P`` ``(N, d)`` the iteration's points, ``SQ`` ``(N-1, T0)`` the queried
    squared distances, ``pgrad`` ``(d,)`` the proxy steps' gradient.
    """

    def __init__(
        self,
        base: TorchOptimizer,
        x0: torch.Tensor,
        n: int,
        t0: int,
        *,
        save_states: bool,
        cuda_graph: bool,
        track_variance: bool = False,
    ) -> None:
        cls = base.torch_class
        kwargs = {**base.torch_kwargs(), **implementation_kwargs(cls, x0.device, x0.dtype)}
        self.n, self.save_states = n, save_states
        self.P = torch.zeros(n, x0.numel(), device=x0.device, dtype=x0.dtype)
        self.SQ = torch.zeros(max(n - 1, 1), t0, device=x0.device, dtype=x0.dtype)
        self.VAR: torch.Tensor | None = (
            torch.zeros(max(n - 1, 1), device=x0.device, dtype=x0.dtype) if track_variance else None
        )
        self.tslot = x0.detach().clone()
        self.topt = cls([self.tslot], **kwargs)
        self.pslot = torch.zeros_like(self.tslot)
        self.pgrad = torch.zeros_like(self.tslot)
        self.pslot.grad = self.pgrad
        self.popt = cls([self.pslot], **kwargs)
        self.saved: list[dict[str, Any]] = []
        self.use_graph = cuda_graph and graphable(cls, x0.device)
        self.graph: Any = None  # torch.cuda.CUDAGraph once captured
        self.graph_failed = False
        self.solve_in_graph = True  # the graph holds the estimator's device solve
        self.replays = 0
        # The true step, graphed per (j, from_proxy); its gradient in a static buffer.
        self.tgrad = torch.zeros_like(self.tslot)
        self._true_graphs = KeyedGraphs("the true step")

    # ------------------------------------------------------------------------------ state
    def _tstate(self) -> dict[str, Any]:
        return self.topt.state[self.tslot]

    def _pstate(self) -> dict[str, Any]:
        return self.popt.state[self.pslot]

    @staticmethod
    def _copy_state(dst: dict[str, Any], src: dict[str, Any]) -> None:
        """In place where both hold a tensor (static addresses), by assignment otherwise."""
        for key, value in src.items():
            old = dst.get(key)
            if isinstance(value, torch.Tensor) and isinstance(old, torch.Tensor):
                old.copy_(value)
            else:
                dst[key] = value.clone() if isinstance(value, torch.Tensor) else value

    def _prepare(self) -> None:
        """Allocate the proxy state and the saved states (eagerly, before any capture)."""
        self._copy_state(self._pstate(), self._tstate())
        want = self.n - 1 if self.save_states else 0
        while len(self.saved) < want:
            self.saved.append({})
        for saved in self.saved:
            self._copy_state(saved, self._pstate())

    # ------------------------------------------------------------------------------ body
    @torch.no_grad()
    def body(self, est: KernelGradientEstimator, *, solve: bool = True) -> None:
        """Anchor at ``P[0]`` (and the device solve), then the N-1 proxy steps from the true
        state; fills ``P[1:]``, ``SQ`` and (``save_states``) the saved states. Static tensors
        only. ``solve=False`` leaves out the device solve (done before the replay instead)."""
        est.device_begin(self.P[0], solve=solve)
        pstate = self._pstate()
        self._copy_state(pstate, self._tstate())
        self.pslot.copy_(self.P[0])
        for s in range(1, self.n):
            if self.save_states:
                self._copy_state(self.saved[s - 1], pstate)
            var = None if self.VAR is None else self.VAR[s - 1 : s]
            est.query_into(self.pslot, self.SQ[s - 1], self.pgrad, var)
            self.popt.step()
            self.P[s].copy_(self.pslot)

    def run(self, est: KernelGradientEstimator) -> None:
        """The proxy body for this iteration: replayed from the CUDA graph in ``"gp"`` mode
        on CUDA (captured the first time), eager otherwise."""
        self._prepare_once()
        if not (self.use_graph and est.mode == "gp" and not self.graph_failed):
            self.body(est)
            return
        if self.graph is not None:
            if not self.solve_in_graph and est.device_solve:
                est.solve_device()  # eagerly, before the replay (independent of the anchor)
            self.graph.replay()
            self.replays += 1
            return
        # First "gp" iteration: warm up on a side stream (this run's real result; it also
        # creates lazy state such as cuBLAS workspaces), then capture. The body is
        # idempotent (re-anchoring at the same point, re-stepping from the same true
        # state), so later replays start from the state it expects.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.body(est)
        torch.cuda.current_stream().wait_stream(side)
        for solve in (True, False) if est.device_solve else (True,):
            try:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    self.body(est, solve=solve)
                self.graph, self.solve_in_graph = graph, solve
                return
            except Exception as err:  # a capture failure: without the solve, then eager
                what = "the proxy loop" + (" with the device solve" if solve else "")
                log.warning("optex: CUDA graph capture of %s failed (%r)", what, err)
        self.graph_failed = True
        log.warning("optex: the proxy loop runs eagerly")

    def _prepare_once(self) -> None:
        if self.graph is None:  # cheap; never touches tensors a captured graph reads
            self._prepare()

    # ------------------------------------------------------------------------------ true step
    @torch.no_grad()
    def true_step(self, j: int, grad: torch.Tensor, from_proxy: bool) -> torch.Tensor:
        """The base step from ``P[j]`` on the true gradient ``grad`` ``(d,)``; with
        ``from_proxy`` the state is the proxy state at point j first. Returns a fresh
        ``(d,)`` tensor.

        With the proxy graph in use, the step is replayed from a CUDA graph per
        ``(j, from_proxy)`` (:class:`~optkit_optex.graphs.KeyedGraphs`). The gradient enters
        through the static buffer ``tgrad`` either way."""
        self.tgrad.copy_(grad)
        if self.use_graph and self.graph is not None:
            self._true_graphs.run((j, from_proxy), lambda: self._true_body(j, from_proxy))
        else:
            self._true_body(j, from_proxy)
        return self.tslot.clone()

    @property
    def true_graph_failed(self) -> bool:
        """A capture of the true step failed: it runs eagerly from then on."""
        return self._true_graphs.failed

    def _true_body(self, j: int, from_proxy: bool) -> None:
        """The true step on static tensors (capturable): state from the proxy at ``j`` (with
        ``from_proxy``), ``tslot`` from ``P[j]``, one base step on ``tgrad``."""
        if from_proxy:
            src = self._pstate() if j == self.n - 1 or not self.saved else self.saved[j]
            self._copy_state(self._tstate(), src)
        self.tslot.copy_(self.P[j])
        self.tslot.grad = self.tgrad
        self.topt.step()
        self.tslot.grad = None
