"""``optkit.OptEx``: OptEx as a ``torch.optim.Optimizer`` for an existing training loop.

Example::

    model = torch.nn.Linear(20, 1)
    opt = optkit.OptEx(model.parameters(), base=torch.optim.Adam, parallelism=4, lr=1e-2)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    for _ in range(100):
        opt.step(closure)

One ``step(closure)`` is one OptEx iteration: N-1 proxy steps of the base optimizer on
kernel-estimated gradients, then the closure at each of the N points (one after the other:
this entry point has no vmap executor; N true gradients cost N closure calls), the N pairs
into the history, and the true base step from the last point (or the lowest-loss one). The
closure must recompute the loss at the *current* parameter values and call ``backward``; let
it draw a fresh minibatch on each call if the N gradients should see different data.

The iteration is :class:`~optkit_optex.engine.Engine`'s, as for the registered ``optex``
optimizer; the base rule is the ``torch.optim`` instance itself, stepping this optimizer's
parameters (:class:`ParamGroupsRule`), so that its ``state_dict`` and any LR scheduler on
the shared ``param_groups`` are the base optimizer's own.

A loop that can hand over its model and a loss function gets the parallel round instead:
``step_batched(model, loss_fn, batches)`` evaluates the N gradients in one ``torch.func.vmap``
over ``torch.func.functional_call`` (``docs/examples/optex-batched/``)::

    def loss_fn(model, batch):
        x, y = batch
        return torch.nn.functional.mse_loss(model(x), y)

    for batches in loader_of_n_batches:  # N (x, y) minibatches of equal shapes
        opt.step_batched(model, loss_fn, batches)
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch.nn.utils import parameters_to_vector

from optkit.errors import ConfigError
from optkit.executors import stack_batches
from optkit_optex.config import OPTION_KEYS, OptExConfig
from optkit_optex.engine import Engine, EngineState, Round
from optkit_optex.estimator import KernelGradientEstimator

WHERE = "optkit.OptEx"
DEFAULT_PARALLELISM = 4

Snapshot = dict[torch.Tensor, dict[str, Any]]
"""A ``torch.optim`` instance's per-parameter state, copied."""


class OptEx(torch.optim.Optimizer):
    """OptEx over a ``torch.optim`` base optimizer (see the module docstring).

    Args:
        params: parameters or parameter groups, as for any ``torch.optim`` optimizer.
        base: a ``torch.optim.Optimizer`` subclass. It shares this optimizer's
            ``param_groups`` (LR schedulers work).
        config: the OptEx options whole (:class:`~optkit_optex.config.OptExConfig`), or
            leave it out and give them as keywords.
        **kwargs: OptEx options by name (``parallelism`` (default 4 here), ``history``,
            ``next_iterate``, ``fit``, ``batches_per_point``, ... :data:`OPTION_KEYS`, as
            for the registered ``optex`` optimizer); every other keyword (``lr``, ``betas``,
            ...) goes to ``base``.

    ``state_dict`` holds the base optimizer's state; the estimator's history is not saved (it
    refills within ``history / parallelism`` steps).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        base: type[torch.optim.Optimizer] = torch.optim.Adam,
        *,
        config: OptExConfig | None = None,
        **kwargs: Any,
    ) -> None:
        if not (isinstance(base, type) and issubclass(base, torch.optim.Optimizer)) or issubclass(
            base, OptEx
        ):
            raise ConfigError(
                f"{WHERE}: base must be a torch.optim.Optimizer class such as"
                f" torch.optim.Adam, got {base!r}"
            )
        options = {k: v for k, v in kwargs.items() if k in OPTION_KEYS}
        base_kwargs = {k: v for k, v in kwargs.items() if k not in OPTION_KEYS}
        if config is None:
            if "parallelism" not in options and "workers" not in options:
                options["parallelism"] = DEFAULT_PARALLELISM
            config = OptExConfig.create(WHERE, **options)
        elif options:
            raise ConfigError(
                f"{WHERE}: give the OptEx options either as config= or as keywords, not both"
                f" (got config and {', '.join(sorted(options))})"
            )
        super().__init__(params, defaults={})
        dim = sum(p.numel() for group in self.param_groups for p in group["params"])
        config.estimator.check_dim(dim, WHERE)
        try:
            self.base = base(self.param_groups, **base_kwargs)
        except TypeError as err:
            close = [c for k in base_kwargs for c in difflib.get_close_matches(k, OPTION_KEYS, n=1)]
            hint = f" (OptEx options: did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"{WHERE}: bad keyword for {base.__name__}: {err}{hint}") from err
        self.config = config
        self.engine = Engine(config, device_solve=False, cuda_graph=False, check_finite=True)
        self._state: EngineState | None = None
        self._batched: tuple[tuple[int, int], Callable[..., Any]] | None = None
        self.last_losses: list[float] = []

    @property
    def parallelism(self) -> int:
        """P, the points of the current round's split (with ``batches_per_point = "auto"``
        1 while the noise is measured, then ``workers / K``)."""
        return self.config.split[0] if self._state is None else self._state.n

    @property
    def batches_per_point(self) -> int:
        """K, the minibatch gradients per point of the current split."""
        return self.config.split[1] if self._state is None else self._state.k

    @property
    def workers(self) -> int:
        """W = P x K, the gradients of every round (the batches ``step_batched`` takes)."""
        return self.config.round_size

    @property
    def estimator(self) -> KernelGradientEstimator | None:
        """The kernel gradient estimator (``None`` before the first step)."""
        return None if self._state is None else self._state.estimator

    @property
    def iteration(self) -> int:
        return 0 if self._state is None else self._state.iteration

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def _plan(self, params: list[torch.Tensor]) -> Round:
        """Begin an iteration at the current parameters: the engine's round."""
        x = parameters_to_vector(params).detach()
        if self._state is None:
            self._state = self.engine.init(
                x, lambda x0, config: ParamGroupsRule(self.base, params, x0, config)
            )
        return self.engine.plan(x, self._state)

    def _finish(self, planned: Round, losses: torch.Tensor, grads: torch.Tensor) -> None:
        """The round's ``(W,)`` losses and ``(W, d)`` gradients to the engine, whose true
        step leaves the parameters at the next iterate."""
        assert self._state is not None
        _, _, info = self.engine.update(self._state, planned, grads, losses)
        self.last_losses = info.losses

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One OptEx iteration; returns the closure's loss at the starting parameters.

        The closure runs ``parallelism x batches_per_point`` times, one after the other: K
        times at each point of the proxy trajectory (fewer points when ``stop_variance``
        stops it; the remaining calls go to its last point)."""
        if closure is None:
            raise ConfigError(
                f"{WHERE}.step needs a closure that recomputes the loss at the current"
                " parameters and calls backward (OptEx evaluates it at N points)"
            )
        params = self._params()
        planned = self._plan(params)
        losses: list[torch.Tensor] = []
        grads: list[torch.Tensor] = []
        first_loss: Any = None
        for i in planned.index:
            load(params, planned.points[i])
            with torch.enable_grad():
                loss = closure()
            if first_loss is None:
                first_loss = loss
            value = loss.detach() if isinstance(loss, torch.Tensor) else torch.tensor(loss)
            losses.append(value.reshape(()).to(torch.float64))
            grads.append(grad_vector(params))
        self._finish(planned, torch.stack(losses), torch.stack(grads))
        return first_loss

    @torch.no_grad()
    def step_batched(
        self,
        model: torch.nn.Module,
        loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
        batches: Sequence[Any],
    ) -> torch.Tensor:
        """One OptEx iteration whose ``parallelism x batches_per_point`` gradients are ONE
        ``torch.func.vmap`` call over ``torch.func.functional_call`` (the parallel round of
        the method, where :meth:`step` calls a closure N times one after the other).

        Args:
            model: the module whose parameters this optimizer holds (every optimized
                parameter must be one of ``model``'s; others stay as they are).
            loss_fn: ``loss_fn(model, batch) -> scalar loss``; called with ``model``'s
                parameters replaced by each point's (pure: no in-place state updates, no
                data-dependent Python control flow, as ``vmap`` requires; e.g. no
                BatchNorm in training mode).
            batches: ``parallelism x batches_per_point`` batches (pytrees of tensors with
                equal shapes), one per gradient: batch ``i`` goes to the ``i``-th
                evaluation, in the order :meth:`step` would call its closure.

        Returns:
            The loss at the starting parameters (on its first batch), detached.
        """
        params = self._params()
        want = self.workers
        if len(batches) != want:
            raise ConfigError(
                f"{WHERE}.step_batched: needs workers = parallelism x batches_per_point ="
                f" {self.parallelism} x {self.batches_per_point} = {want} batches (one per"
                f" gradient), got {len(batches)}"
            )
        names = self._names(model, params)
        planned = self._plan(params)
        stacked = planned.expanded()  # (W, d)
        values: dict[str, torch.Tensor] = {}
        offset = 0
        for name, p in zip(names, params, strict=True):
            values[name] = stacked[:, offset : offset + p.numel()].view(-1, *p.shape)
            offset += p.numel()
        fn = self._batched_fn(model, loss_fn)
        with torch.enable_grad():
            grads, losses = fn(values, stack_batches(batches))
        flat = torch.cat([grads[name].reshape(want, -1) for name in names], 1).detach()
        losses = losses.detach()
        self._finish(planned, losses.to(torch.float64), flat)
        return losses[0]

    def _names(self, model: torch.nn.Module, params: list[torch.Tensor]) -> list[str]:
        """``functional_call`` names (``"model." + name``) of the optimized parameters."""
        by_id = {id(p): name for name, p in model.named_parameters()}
        names = []
        for i, p in enumerate(params):
            name = by_id.get(id(p))
            if name is None:
                raise ConfigError(
                    f"{WHERE}.step_batched: optimized parameter #{i} (shape"
                    f" {tuple(p.shape)}) is not a parameter of the model passed; pass the"
                    " module whose parameters this optimizer was built on"
                )
            names.append("model." + name)
        return names

    def _batched_fn(
        self, model: torch.nn.Module, loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor]
    ) -> Callable[..., Any]:
        """``vmap(grad_and_value(params, batch -> loss_fn(model with params, batch)))``,
        cached for the last (model, loss_fn)."""
        key = (id(model), id(loss_fn))
        if self._batched is not None and self._batched[0] == key:
            return self._batched[1]
        wrapper = _LossModule(model, loss_fn)

        def loss(values: dict[str, torch.Tensor], batch: Any) -> torch.Tensor:
            return torch.func.functional_call(wrapper, values, (batch,))

        fn = torch.func.vmap(torch.func.grad_and_value(loss), in_dims=(0, 0))
        self._batched = (key, fn)
        return fn

    def state_dict(self) -> dict[str, Any]:
        return self.base.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base.load_state_dict(state_dict)


class ParamGroupsRule:
    """The engine's base rule (:class:`~optkit_optex.rules.FlatRule`) as the drop-in's
    ``torch.optim`` instance ``base`` stepping the parameters ``params`` themselves: a proxy
    step loads the point into the parameters, sets their ``.grad`` and calls
    ``base.step()``; saved states are copies of ``base.state``. Never captured in a CUDA
    graph."""

    graphable = False

    def __init__(
        self,
        base: torch.optim.Optimizer,
        params: list[torch.Tensor],
        x0: torch.Tensor,
        config: OptExConfig,
    ) -> None:
        self.base, self.params = base, params
        self.n, self.carry = config.split[0], config.proxy_updates_state
        self.save_states = config.saves_states
        self.point = x0.detach().clone()
        self.grad = torch.zeros_like(self.point)
        self.saved: list[Snapshot] = []
        self.resize(self.n)
        self.start_state: Snapshot | None = None

    def prepare(self) -> None:
        pass

    def resize(self, n: int) -> None:
        self.n = n
        self.saved = [{} for _ in range(n - 1)] if self.save_states else []

    def _snapshot(self) -> Snapshot:
        return {
            p: {
                k: v.clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)
                for k, v in s.items()
            }
            for p, s in self.base.state.items()
        }

    def _restore(self, snapshot: Snapshot) -> None:
        """``base.state`` := ``snapshot`` (used once: its tensors become the live state)."""
        for p in [p for p in self.base.state if p not in snapshot]:
            del self.base.state[p]
        for p, s in snapshot.items():
            self.base.state[p] = dict(s)

    def start(self, x0: torch.Tensor) -> None:
        self.start_state = None if self.carry else self._snapshot()
        load(self.params, x0)
        self.point.copy_(x0)

    def save(self, i: int) -> None:
        self.saved[i] = self._snapshot()

    def step(self) -> None:
        set_grads(self.params, self.grad)
        self.base.step()
        self.point.copy_(parameters_to_vector(self.params))

    def true_step(
        self, j: int, x_j: torch.Tensor, grad: torch.Tensor, *, from_proxy: bool, graphed: bool
    ) -> torch.Tensor:
        if from_proxy:
            if j != self.n - 1 and self.saved:
                self._restore(self.saved[j])
        elif self.start_state is not None:
            self._restore(self.start_state)
        self.start_state = None
        load(self.params, x_j)
        set_grads(self.params, grad)
        self.base.step()
        return parameters_to_vector(self.params).detach()


def load(params: list[torch.Tensor], vec: torch.Tensor) -> None:
    """Copy the flat ``vec`` ``(d,)`` into ``params`` (in place)."""
    start = 0
    for p in params:
        n = p.numel()
        p.copy_(vec[start : start + n].view_as(p))
        start += n


def set_grads(params: list[torch.Tensor], vec: torch.Tensor) -> None:
    """``params``' ``.grad`` := fresh copies of the slices of ``vec`` ``(d,)``."""
    start = 0
    for p in params:
        n = p.numel()
        p.grad = vec[start : start + n].view_as(p).to(p.dtype).clone()
        start += n


def grad_vector(params: list[torch.Tensor]) -> torch.Tensor:
    """``(d,)`` the parameters' gradients (zeros where ``.grad`` is ``None``), a fresh
    tensor."""
    return torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
    )


class _LossModule(torch.nn.Module):
    """``loss_fn(model, batch)`` as a module, so that ``functional_call`` can swap the
    model's parameters (named ``"model." + name``) for one call."""

    def __init__(
        self, model: torch.nn.Module, loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor]
    ) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> torch.Tensor:
        return self.loss_fn(self.model, batch)
