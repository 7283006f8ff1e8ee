"""The base update rule of OptEx on flat ``(d,)`` points, as :class:`~optkit_optex.engine.Engine`
drives it (:class:`FlatRule`), and its two implementations for the registered optimizer.

A rule holds the base optimizer's *true* state across iterations and, during an iteration's
proxy trajectory, a *proxy* state: :meth:`FlatRule.start` begins it from the true state at the
start point, :meth:`FlatRule.step` takes one proxy step on the estimate the engine wrote into
:attr:`FlatRule.grad` (updating :attr:`FlatRule.point`), :meth:`FlatRule.save` remembers the
proxy state at a point (for a true step from a point before the last), and
:meth:`FlatRule.true_step` takes the one true step of the iteration.

* :class:`TorchFlatRule` (the *fused* rule): a ``torch.optim``-backed base whose update is
  elementwise (SGD, Adam, AdamW, Adamax, RMSprop, Adagrad, ...; :func:`flat_rule_supported`)
  runs on ONE flat tensor with torch's own implementation (``fused`` and ``capturable`` on CUDA
  where torch has them): no per-step dict flatten/unflatten, no per-step clones. Two
  ``torch.optim`` instances of the base's class share the rule: the *true* one over ``tslot``
  (the base optimizer's state across iterations) and the *proxy* one over ``pslot`` (each
  iteration starts from an in-place copy of the true state). Every tensor it touches is a
  static buffer, so on CUDA the engine captures the proxy loop in a CUDA graph, and the true
  step is replayed from a graph per (chosen point, from proxy).
* :class:`GenericRule`: any registered first-order optimizer through its functional
  ``update`` on params dicts (:class:`~optkit_optex.flat.Flattener` views of the points).

The ``torch.optim`` drop-in has a third, over its own parameters
(:class:`optkit_optex.torch_api.ParamGroupsRule`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Protocol

import torch
from optkit_baselines.torch_optim import TorchOptimizer

from optkit.cuda_graphs import KeyedGraphs
from optkit.interfaces import FirstOrderOptimizer, Params
from optkit_optex.config import OptExConfig
from optkit_optex.flat import Flattener

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


class FlatRule(Protocol):
    """The base rule on flat points (see the module docstring).

    Attributes:
        point: ``(d,)`` the proxy point (a static buffer; :meth:`start` and :meth:`step`
            write it).
        grad: ``(d,)`` the gradient of the next proxy step (a static buffer the engine
            writes the estimate into).
        graphable: the proxy steps and the true step touch static tensors only and may be
            captured in a CUDA graph.
    """

    graphable: bool

    @property
    def point(self) -> torch.Tensor: ...

    @property
    def grad(self) -> torch.Tensor: ...

    def prepare(self) -> None:
        """Allocate what :meth:`start` and :meth:`save` write (eagerly, before a capture)."""

    def resize(self, n: int) -> None:
        """Rounds have ``n`` points from now on (``batches_per_point = "auto"`` chose the
        split); the true state is kept. Called before any proxy step of the new split."""

    def start(self, x0: torch.Tensor) -> None:
        """Begin the proxy trajectory at ``x0`` ``(d,)`` from the true state."""

    def save(self, i: int) -> None:
        """Remember the proxy state at proxy point ``i`` (before the step from it)."""

    def step(self) -> None:
        """One proxy step from :attr:`point` on :attr:`grad`."""

    def true_step(
        self, j: int, x_j: torch.Tensor, grad: torch.Tensor, *, from_proxy: bool, graphed: bool
    ) -> torch.Tensor:
        """The true base step from ``x_j`` ``(d,)`` (point ``j``) on ``grad`` ``(d,)``,
        from the proxy state at point ``j`` (``from_proxy``: the state carried through the
        proxy steps) or from the iteration's starting state; ``graphed``: the engine's proxy
        loop runs from a CUDA graph. Returns a fresh ``(d,)`` tensor, the next iterate."""
        ...


RuleFactory = Callable[[torch.Tensor, OptExConfig], FlatRule]
"""``factory(x0, config)``: the rule for a run starting at ``x0`` ``(d,)``."""


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
    implementation, the one the generic rule uses, so the two rules agree bit for bit
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


def base_rule(base: FirstOrderOptimizer, flat: Flattener, *, fused: bool) -> RuleFactory:
    """The rule factory for a registered ``base``: :class:`TorchFlatRule` when ``fused``
    and :func:`flat_rule_supported`, else :class:`GenericRule` (over ``flat``'s layout)."""
    if fused and flat_rule_supported(base):
        assert isinstance(base, TorchOptimizer)
        return lambda x0, config: TorchFlatRule(base, x0, config)
    return lambda x0, config: GenericRule(base, flat, x0, config)


def copy_state(dst: dict[str, Any], src: dict[str, Any]) -> None:
    """One parameter's ``torch.optim`` state ``src`` into ``dst``: in place where both hold a
    tensor (static addresses), by assignment otherwise."""
    for key, value in src.items():
        old = dst.get(key)
        if isinstance(value, torch.Tensor) and isinstance(old, torch.Tensor):
            old.copy_(value)
        else:
            dst[key] = value.clone() if isinstance(value, torch.Tensor) else value


class TorchFlatRule:
    """Two flat ``torch.optim`` instances of ``base``'s class (see the module docstring).

    Args:
        base: the :class:`TorchOptimizer` base (its class and keyword config are used).
        x0: flat ``(d,)`` start point. config: the iteration's options (N, whether states
            are saved at each proxy point).

    Buffers: ``tslot`` / ``pslot`` ``(d,)`` the true and the proxy parameter, ``pgrad``
    (:attr:`grad`) and ``tgrad`` ``(d,)`` their gradients.
    """

    def __init__(self, base: TorchOptimizer, x0: torch.Tensor, config: OptExConfig) -> None:
        cls = base.torch_class
        kwargs = {**base.torch_kwargs(), **implementation_kwargs(cls, x0.device, x0.dtype)}
        self.n, self.save_states = config.split[0], config.saves_states
        self.tslot = x0.detach().clone()
        self.topt = cls([self.tslot], **kwargs)
        self.pslot = torch.zeros_like(self.tslot)
        self.pgrad = torch.zeros_like(self.tslot)
        self.pslot.grad = self.pgrad
        self.popt = cls([self.pslot], **kwargs)
        self.point, self.grad = self.pslot, self.pgrad
        self.graphable = graphable(cls, x0.device)
        self.saved: list[dict[str, Any]] = []
        # The true step, graphed per (j, from_proxy); its gradient in a static buffer.
        self.tgrad = torch.zeros_like(self.tslot)
        self._true_graphs = KeyedGraphs("the true step")

    def _tstate(self) -> dict[str, Any]:
        return self.topt.state[self.tslot]

    def _pstate(self) -> dict[str, Any]:
        return self.popt.state[self.pslot]

    def resize(self, n: int) -> None:
        self.n = n  # prepare() allocates the saved states the new split needs
        del self.saved[max(n - 1, 0) :]

    def prepare(self) -> None:
        copy_state(self._pstate(), self._tstate())
        want = self.n - 1 if self.save_states else 0
        while len(self.saved) < want:
            self.saved.append({})
        for saved in self.saved:
            copy_state(saved, self._pstate())

    def start(self, x0: torch.Tensor) -> None:
        copy_state(self._pstate(), self._tstate())
        self.pslot.copy_(x0)

    def save(self, i: int) -> None:
        copy_state(self.saved[i], self._pstate())

    def step(self) -> None:
        self.popt.step()

    @torch.no_grad()
    def true_step(
        self, j: int, x_j: torch.Tensor, grad: torch.Tensor, *, from_proxy: bool, graphed: bool
    ) -> torch.Tensor:
        """With ``graphed``, replayed from a CUDA graph per ``(j, from_proxy)``
        (:class:`~optkit.cuda_graphs.KeyedGraphs`; ``x_j`` must then be the same static
        row for the same ``j``). The gradient enters through the static ``tgrad``."""
        self.tgrad.copy_(grad)
        if graphed and self.graphable:
            self._true_graphs.run((j, from_proxy), lambda: self._true_body(j, x_j, from_proxy))
        else:
            self._true_body(j, x_j, from_proxy)
        return self.tslot.clone()

    @property
    def true_graph_failed(self) -> bool:
        """A capture of the true step failed: it runs eagerly from then on."""
        return self._true_graphs.failed

    def _true_body(self, j: int, x_j: torch.Tensor, from_proxy: bool) -> None:
        """The true step on static tensors (capturable): state from the proxy at ``j`` (with
        ``from_proxy``), ``tslot`` from ``x_j``, one base step on ``tgrad``."""
        if from_proxy:
            src = self._pstate() if j == self.n - 1 or not self.saved else self.saved[j]
            copy_state(self._tstate(), src)
        self.tslot.copy_(x_j)
        self.tslot.grad = self.tgrad
        self.topt.step()
        self.tslot.grad = None


class GenericRule:
    """Any registered first-order ``base`` through ``base.update`` on params dicts (views of
    the flat points in ``flat``'s layout). With ``proxy_updates_state`` the proxy steps run
    on the true state itself (no copy), as the released code does; without, on a
    ``clone_state`` copy. The true step from a proxy point takes the dict the proxy step
    returned (a :class:`~optkit_baselines.torch_optim.TorchOptimizer` base then need not
    reload it). Never captured in a CUDA graph."""

    graphable = False

    def __init__(
        self, base: FirstOrderOptimizer, flat: Flattener, x0: torch.Tensor, config: OptExConfig
    ) -> None:
        self.base, self.flat = base, flat
        self.n, self.carry = config.split[0], config.proxy_updates_state
        self.save_states = config.saves_states
        self.state: Any = base.init(flat.unflatten(x0.detach().clone()))
        self.run: Any = self.state
        self.current = flat.unflatten(x0.detach().clone())
        self.outputs: list[Params] = []  # this iteration's proxy points, as dicts
        self.grad = torch.zeros_like(x0)
        self.saved: list[Any] = [None] * (self.n - 1) if config.saves_states else []

    @property
    def point(self) -> torch.Tensor:
        """``(d,)`` the current proxy point (a view for one tensor, else a concatenation)."""
        return self.flat.flatten(self.current)

    def prepare(self) -> None:
        pass

    def resize(self, n: int) -> None:
        self.n = n
        self.saved = [None] * (n - 1) if self.save_states else []

    def start(self, x0: torch.Tensor) -> None:
        self.run = self.state if self.carry else self.base.clone_state(self.state)
        self.current = self.flat.unflatten(x0)
        self.outputs = [self.current]

    def save(self, i: int) -> None:
        self.saved[i] = self.base.clone_state(self.run)

    def step(self) -> None:
        # the base may keep the gradient it was given: the next estimate goes to a new buffer
        mu, self.grad = self.grad, torch.empty_like(self.grad)
        self.current, self.run = self.base.update(self.current, self.flat.unflatten(mu), self.run)
        if self.carry:
            self.state = self.run
        self.outputs.append(self.current)

    def true_step(
        self, j: int, x_j: torch.Tensor, grad: torch.Tensor, *, from_proxy: bool, graphed: bool
    ) -> torch.Tensor:
        if not from_proxy:
            state = self.state
        elif j == self.n - 1 or not self.saved:
            state = self.run
        else:
            state = self.saved[j]
        params = self.outputs[j] if j < len(self.outputs) else self.flat.unflatten(x_j)
        new, self.state = self.base.update(params, self.flat.unflatten(grad), state)
        self.run, self.outputs = self.state, []
        return self.flat.flatten(new)
