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
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import torch
from optkit_baselines.parallel import check_parallelism
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from optkit.errors import ConfigError
from optkit.executors import stack_batches
from optkit_optex.estimator import (
    DEFAULTS,
    FitMode,
    KernelGradientEstimator,
    NoiseEstimate,
    check_effective_dim,
    estimator_options,
)
from optkit_optex.rounds import (
    check_batches_per_point,
    check_stop_variance,
    expand,
    group_counts,
    group_mean,
    within_noise,
)


class OptEx(torch.optim.Optimizer):
    """OptEx over a ``torch.optim`` base optimizer (see the module docstring).

    Args:
        params: parameters or parameter groups, as for any ``torch.optim`` optimizer.
        base: a ``torch.optim.Optimizer`` subclass; ``**base_kwargs`` (``lr``, ``betas``, ...)
            go to it. It shares this optimizer's ``param_groups`` (LR schedulers work).
        parallelism, history, next_iterate, proxy_updates_state, kernel, fit, lengthscale,
        noise, fit_coords, refit_every, fit_lag, mll_steps, seed, batches_per_point,
        stop_variance, effective_dim, noise_estimate: as for the registered ``optex``
            optimizer (:class:`optkit_optex.optimizer.OptEx`).

    ``state_dict`` holds the base optimizer's state; the estimator's history is not saved (it
    refills within ``history / parallelism`` steps).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        base: type[torch.optim.Optimizer] = torch.optim.Adam,
        parallelism: int = 4,
        history: int = DEFAULTS.history,
        next_iterate: Literal["last", "best"] = "last",
        proxy_updates_state: bool = True,
        kernel: str = DEFAULTS.kernel,
        fit: FitMode = DEFAULTS.fit,
        lengthscale: float | None = None,
        noise: float | None = None,
        fit_coords: int = DEFAULTS.fit_coords,
        refit_every: int = DEFAULTS.refit_every,
        fit_lag: int = DEFAULTS.fit_lag,
        mll_steps: int = DEFAULTS.mll_steps,
        seed: int = DEFAULTS.seed,
        batches_per_point: int = 1,
        stop_variance: float | None = None,
        effective_dim: int | None = DEFAULTS.effective_dim,
        noise_estimate: NoiseEstimate = DEFAULTS.noise_estimate,
        **base_kwargs: Any,
    ) -> None:
        if not (isinstance(base, type) and issubclass(base, torch.optim.Optimizer)) or issubclass(
            base, OptEx
        ):
            raise ConfigError(
                f"optkit.OptEx: base must be a torch.optim.Optimizer class such as"
                f" torch.optim.Adam, got {base!r}"
            )
        check_parallelism(parallelism, "optex")
        check_batches_per_point(batches_per_point, "optkit.OptEx")
        check_stop_variance(stop_variance, "optkit.OptEx")
        if next_iterate not in ("last", "best"):
            raise ConfigError(
                f"optkit.OptEx: next_iterate must be 'last' or 'best', got {next_iterate!r}"
            )
        options = estimator_options(
            history=history,
            kernel=kernel,
            fit=fit,
            lengthscale=lengthscale,
            noise=noise,
            fit_coords=fit_coords,
            refit_every=refit_every,
            fit_lag=fit_lag,
            mll_steps=mll_steps,
            seed=seed,
            effective_dim=effective_dim,
            noise_estimate=noise_estimate,
        )
        super().__init__(params, defaults={})
        dim = sum(p.numel() for group in self.param_groups for p in group["params"])
        check_effective_dim(effective_dim, dim, "optkit.OptEx")
        try:
            self.base = base(self.param_groups, **base_kwargs)
        except TypeError as err:
            raise ConfigError(f"optkit.OptEx: bad keyword for {base.__name__}: {err}") from err
        self.parallelism, self.history = parallelism, history
        self.next_iterate, self.proxy_updates_state = next_iterate, proxy_updates_state
        self.estimator_options = options
        self.batches_per_point, self.stop_variance = batches_per_point, stop_variance
        self._batched: tuple[tuple[int, int], Callable[..., Any]] | None = None
        self.estimator: KernelGradientEstimator | None = None
        self.iteration = 0
        self.last_losses: list[float] = []

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def _set_grads(self, params: list[torch.Tensor], vec: torch.Tensor) -> None:
        start = 0
        for p in params:
            n = p.numel()
            p.grad = vec[start : start + n].view_as(p).to(p.dtype).clone()
            start += n

    @staticmethod
    def _grad_vector(params: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(
            [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
        )

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One OptEx iteration; returns the closure's loss at the starting parameters.

        The closure runs ``parallelism x batches_per_point`` times, one after the other: K
        times at each point of the proxy trajectory (fewer points when ``stop_variance``
        stops it; the remaining calls go to its last point)."""
        if closure is None:
            raise ConfigError(
                "optkit.OptEx.step needs a closure that recomputes the loss at the current"
                " parameters and calls backward (OptEx evaluates it at N points)"
            )
        params = self._params()
        points, counts, saved, start_state = self._proxy(params)
        losses: list[torch.Tensor] = []
        grads: list[torch.Tensor] = []
        first_loss: Any = None
        for point in expand(points, counts):
            vector_to_parameters(point, params)
            with torch.enable_grad():
                loss = closure()
            if first_loss is None:
                first_loss = loss
            value = loss.detach() if isinstance(loss, torch.Tensor) else torch.tensor(loss)
            losses.append(value.reshape(()).to(torch.float64))
            grads.append(self._grad_vector(params).detach().clone())
        self._finish(
            params, points, counts, torch.stack(losses), torch.stack(grads), saved, start_state
        )
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
        want = self.parallelism * self.batches_per_point
        if len(batches) != want:
            raise ConfigError(
                f"optkit.OptEx.step_batched: needs parallelism x batches_per_point ="
                f" {self.parallelism} x {self.batches_per_point} = {want} batches (one per"
                f" gradient), got {len(batches)}"
            )
        names = self._names(model, params)
        points, counts, saved, start_state = self._proxy(params)
        stacked = torch.stack(expand(points, counts))  # (W, d)
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
        self._finish(params, points, counts, losses.to(torch.float64), flat, saved, start_state)
        return losses[0]

    def _names(self, model: torch.nn.Module, params: list[torch.Tensor]) -> list[str]:
        """``functional_call`` names (``"model." + name``) of the optimized parameters."""
        by_id = {id(p): name for name, p in model.named_parameters()}
        names = []
        for i, p in enumerate(params):
            name = by_id.get(id(p))
            if name is None:
                raise ConfigError(
                    f"optkit.OptEx.step_batched: optimized parameter #{i} (shape"
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

    def _proxy(
        self, params: list[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[int], list[dict[str, Any]], dict[str, Any] | None]:
        """Begin an iteration and take the proxy steps: the points ``(d,)`` of the (maybe
        shortened) trajectory, the evaluations per point, the base state saved at each
        point (``"best"`` or ``stop_variance``) and the start state
        (``proxy_updates_state = False``)."""
        n = self.parallelism
        theta0 = parameters_to_vector(params).detach().clone()
        if self.estimator is None:
            self.estimator = KernelGradientEstimator(
                theta0.numel(),
                self.history,
                device=theta0.device,
                dtype=theta0.dtype,
                **self.estimator_options,
            )
        est = self.estimator
        self.iteration += 1
        est.begin(theta0)
        points = [theta0]
        start_state = None
        saved: list[dict[str, Any]] = []
        save = self.next_iterate == "best" or self.stop_variance is not None
        if est.mode == "empty" or n == 1:
            points = [theta0] * n
        else:
            if not self.proxy_updates_state:
                start_state = copy.deepcopy(self.base.state_dict())
            current = theta0
            for _ in range(n - 1):
                if save and self.proxy_updates_state:
                    saved.append(copy.deepcopy(self.base.state_dict()))
                mu = est.query(current)
                if (
                    self.stop_variance is not None
                    and est.mode == "gp"
                    and est.last_variance() > self.stop_variance
                ):
                    break  # the estimate at `current` is not trusted: the trajectory ends
                self._set_grads(params, mu)
                self.base.step()
                current = parameters_to_vector(params).detach().clone()
                points.append(current)
        return points, group_counts(len(points), n, self.batches_per_point), saved, start_state

    def _finish(
        self,
        params: list[torch.Tensor],
        points: list[torch.Tensor],
        counts: list[int],
        losses: torch.Tensor,
        grads: torch.Tensor,
        saved: list[dict[str, Any]],
        start_state: dict[str, Any] | None,
    ) -> None:
        """The round's ``(W,)`` losses and ``(W, d)`` gradients (grouped by point, as
        :func:`~optkit_optex.rounds.expand` lists them) into the history, then the true
        base step from the chosen point."""
        est = self.estimator
        assert est is not None
        means = group_mean(grads, counts)
        noise_var = None
        if est.noise_estimate == "spread":
            noise_var = within_noise(grads.index_select(1, est.coords), counts)
        est.append(
            torch.stack(points),
            means,
            iteration=self.iteration,
            queried=est.queried_distances(),  # the first points are the queried ones
            noise_var=noise_var,
        )
        per_point = group_mean(losses, counts).tolist()
        last = len(points) - 1
        j = last if self.next_iterate == "last" else min(range(last + 1), key=per_point.__getitem__)
        if start_state is not None:
            self.base.load_state_dict(start_state)
        elif saved and j < last:
            self.base.load_state_dict(saved[j])
        vector_to_parameters(points[j], params)
        self._set_grads(params, means[j])
        self.base.step()
        self.last_losses = per_point

    def state_dict(self) -> dict[str, Any]:
        return self.base.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base.load_state_dict(state_dict)


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
