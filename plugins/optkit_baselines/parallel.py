"""Parallel baselines that wrap any registered first-order optimizer.

* ``target``: the ideal parallel method the OptEx paper plots as its upper bound. One
  iteration takes N base steps with *true* gradients, the first N-1 of them counted as free
  of wall-clock (``oracle.evaluate(..., sequential=False)``): sequential_steps += 1,
  grad_evals += N, exactly OptEx's budget with perfect gradient estimates.
* ``data_parallel``: the same N workers used the ordinary way. One base step per iteration on
  the average of N stochastic gradients at the same point, each on its own minibatch (an
  N-times larger batch): sequential_steps += 1, grad_evals += N.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from optkit.context import RunContext
from optkit.errors import ConfigError, PluginError
from optkit.interfaces import (
    BASE_RULE_ALIASES,
    FirstOrderOptimizer,
    Objective,
    Optimizer,
    Params,
    StepInfo,
    Support,
)
from optkit.oracle import Oracle


def build_base(
    base: str,
    base_config: dict[str, Any] | None,
    owner: str,
    run_context: RunContext | None = None,
) -> FirstOrderOptimizer:
    """Create the first-order optimizer ``base`` with ``base_config`` from the registry of
    ``run_context`` (the caller's: ``Registry.create`` passes it to a wrapper that declares a
    ``run_context`` parameter). ``None``, for a wrapper built by hand outside a run, means a
    default :class:`~optkit.context.RunContext`.

    Raises:
        PluginError: ``base`` is not a registered optimizer (valid names listed).
        ConfigError: ``base`` is not first-order, or ``base_config`` does not fit it.
    """
    context = run_context if run_context is not None else RunContext()
    registry = context.plugins
    first_order = [
        n
        for n in registry.names("optimizer")
        if issubclass(registry.get("optimizer", n), FirstOrderOptimizer)
    ]
    try:
        cls = registry.get("optimizer", base)
    except PluginError as err:
        raise PluginError(
            f"optimizer '{owner}': unknown base optimizer '{base}'; first-order optimizers:"
            f" {', '.join(first_order)}"
        ) from err
    if not issubclass(cls, FirstOrderOptimizer):
        raise ConfigError(
            f"optimizer '{owner}': base '{base}' is not a first-order optimizer (it has no"
            f" update(params, grads, state)); use one of: {', '.join(first_order)}"
        )
    spec = {"name": base, **(base_config or {})}
    optimizer = context.create("optimizer", spec, where=f"optimizer '{owner}': base_config")
    assert isinstance(optimizer, FirstOrderOptimizer)
    return optimizer


def check_parallelism(parallelism: int, owner: str) -> None:
    if parallelism < 1:
        raise ConfigError(f"optimizer '{owner}': parallelism must be >= 1, got {parallelism}")


class ParallelBaseline(Optimizer):
    """Common part of the N-worker baselines: a registered first-order ``base`` rule (with its
    ``base_config``) and the number of workers N; subclasses define one iteration."""

    hyper_aliases: ClassVar[dict[str, str]] = BASE_RULE_ALIASES

    def __init__(
        self,
        *,
        base: str = "adam",
        base_config: dict[str, Any] | None = None,
        parallelism: int = 5,
        run_context: RunContext | None = None,
    ) -> None:
        """Args:
        base: a registered first-order optimizer; base_config: its keyword config.
        parallelism: N >= 1 workers (gradient evaluations per iteration).
        run_context: the caller's context (passed by ``Registry.create``, not a config key):
            ``base`` comes from its registry.
        """
        check_parallelism(parallelism, self.name)
        self.base = build_base(base, base_config, self.name, run_context)
        self.parallelism = parallelism

    def init(self, params: Params) -> Any:
        return self.base.init(params)

    def supports(self, objective: Objective) -> Support:
        return self.base.supports(objective)


class Target(ParallelBaseline):
    """Ideal parallel: N sequential true-gradient base steps per counted round."""

    name: ClassVar[str] = "target"
    summary: ClassVar[str] = "ideal parallel upper bound: N true-gradient base steps per round"

    def step(self, params: Params, state: Any, oracle: Oracle) -> tuple[Params, Any, StepInfo]:
        first_loss: float | torch.Tensor = float("nan")
        for s in range(self.parallelism):
            last = s == self.parallelism - 1
            evaluation = oracle.evaluate([params], sequential=last)
            if s == 0:
                first_loss = evaluation.losses  # shape (1,), read when info.loss is
            params, state = self.base.update(params, evaluation.grads[0], state)
        return params, state, StepInfo(loss=first_loss)


class DataParallel(ParallelBaseline):
    """One base step on the mean of N gradients at the same point (N minibatches)."""

    name: ClassVar[str] = "data_parallel"
    summary: ClassVar[str] = "N workers as an N-times larger batch: averaged gradients, one step"

    def step(self, params: Params, state: Any, oracle: Oracle) -> tuple[Params, Any, StepInfo]:
        evaluation = oracle.evaluate([params] * self.parallelism)
        grads = {k: torch.stack([g[k] for g in evaluation.grads]).mean(0) for k in params}
        params, state = self.base.update(params, grads, state)
        return params, state, StepInfo(loss=evaluation.losses.mean())
