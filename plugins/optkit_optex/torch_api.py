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
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from optkit_baselines.parallel import check_parallelism
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from optkit.errors import ConfigError
from optkit_optex.estimator import DEFAULTS, FitMode, KernelGradientEstimator, estimator_options


class OptEx(torch.optim.Optimizer):
    """OptEx over a ``torch.optim`` base optimizer (see the module docstring).

    Args:
        params: parameters or parameter groups, as for any ``torch.optim`` optimizer.
        base: a ``torch.optim.Optimizer`` subclass; ``**base_kwargs`` (``lr``, ``betas``, ...)
            go to it. It shares this optimizer's ``param_groups`` (LR schedulers work).
        parallelism, history, next_iterate, proxy_updates_state, kernel, fit, lengthscale,
        noise, fit_coords, refit_every, fit_lag, mll_steps, seed: as for the registered ``optex``
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
        )
        super().__init__(params, defaults={})
        try:
            self.base = base(self.param_groups, **base_kwargs)
        except TypeError as err:
            raise ConfigError(f"optkit.OptEx: bad keyword for {base.__name__}: {err}") from err
        self.parallelism, self.history = parallelism, history
        self.next_iterate, self.proxy_updates_state = next_iterate, proxy_updates_state
        self.estimator_options = options
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
        """One OptEx iteration; returns the closure's loss at the starting parameters."""
        if closure is None:
            raise ConfigError(
                "optkit.OptEx.step needs a closure that recomputes the loss at the current"
                " parameters and calls backward (OptEx evaluates it at N points)"
            )
        params = self._params()
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
        if est.mode == "empty" or n == 1:
            points = [theta0] * n
        else:
            if not self.proxy_updates_state:
                start_state = copy.deepcopy(self.base.state_dict())
            current = theta0
            for _ in range(n - 1):
                if self.next_iterate == "best" and self.proxy_updates_state:
                    saved.append(copy.deepcopy(self.base.state_dict()))
                self._set_grads(params, est.query(current))
                self.base.step()
                current = parameters_to_vector(params).detach().clone()
                points.append(current)
        losses: list[float] = []
        grads: list[torch.Tensor] = []
        first_loss: Any = None
        for point in points:
            vector_to_parameters(point, params)
            with torch.enable_grad():
                loss = closure()
            if first_loss is None:
                first_loss = loss
            losses.append(float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss))
            grads.append(self._grad_vector(params).detach().clone())
        est.append(
            torch.stack(points),
            torch.stack(grads),
            iteration=self.iteration,
            queried=est.queried_distances(),  # points[:N-1] are the queried proxy points
        )
        j = n - 1 if self.next_iterate == "last" else min(range(n), key=losses.__getitem__)
        if start_state is not None:
            self.base.load_state_dict(start_state)
        elif saved and j < n - 1:
            self.base.load_state_dict(saved[j])
        vector_to_parameters(points[j], params)
        self._set_grads(params, grads[j])
        self.base.step()
        self.last_losses = losses
        return first_loss

    def state_dict(self) -> dict[str, Any]:
        return self.base.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base.load_state_dict(state_dict)
