"""The :class:`HyperOptimizer` contract kit: a real inner pairing, run through ``run_trial``.

The inner pairing is optkit's own reference (the kits' quadratic and plain gradient descent),
held by a private registry that reaches the hyperoptimizer only through its
``HyperContext.run_context``, so the kit also checks that nothing is looked up in the
process-wide registry.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from optkit.context import RunContext, prepare_objective
from optkit.executors import SerialExecutor
from optkit.interfaces import (
    FirstOrderOptimizer,
    HyperContext,
    HyperOptimizer,
    HyperResult,
    Params,
    TrialResult,
)
from optkit.oracle import Oracle
from optkit.testing.kits import NoisyQuadratic


class GradientDescent(FirstOrderOptimizer):
    """``x <- x - lr * g``: the kit's reference inner optimizer (state: none)."""

    name: ClassVar[str] = "testing_gd"
    summary: ClassVar[str] = "plain gradient descent (reference optimizer of optkit.testing)"

    def __init__(self, *, lr: float = 0.1) -> None:
        self.lr = lr

    def init(self, params: Params) -> None:
        return None

    def update(self, params: Params, grads: Params, state: Any) -> tuple[Params, Any]:
        return {k: params[k] - self.lr * grads[k] for k in params}, state

    def clone_state(self, state: Any) -> Any:
        return state


def reference_registry() -> Any:
    """A registry holding only the kit's reference objective and optimizer."""
    from optkit.plugins import Entry, LoadedPlugins, Source
    from optkit.registry import Registry

    loaded = LoadedPlugins()
    source = Source("optkit.testing", "optkit", "")
    for kind, cls in (("objective", NoisyQuadratic), ("optimizer", GradientDescent)):
        loaded.entries[kind][cls.name] = Entry(kind, cls.name, cls, source)
    return Registry(loaded)


REFERENCE_OBJECTIVE = {"name": "testing_quadratic", "dim": 4, "noise": 0.1}
REFERENCE_OPTIMIZER = {"name": "testing_gd", "lr": 0.1}


def _apply(spec: Mapping[str, Any], kind: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    from optkit.runner import apply_dotted

    return apply_dotted(dict(spec), kind, overrides)


class _Harness:
    """A :class:`HyperContext` whose ``run_trial`` trains the inner pairing for ``iterations``
    and scores the final ``evaluate()["loss"]``; every call is recorded."""

    def __init__(
        self,
        context: RunContext,
        objective_spec: Mapping[str, Any],
        optimizer_spec: Mapping[str, Any],
        iterations: int,
        poison_first: bool = False,
    ) -> None:
        self.context = context
        self.objective_spec = dict(objective_spec)
        self.optimizer_spec = dict(optimizer_spec)
        self.iterations = iterations
        self.poison_first = poison_first
        self.calls: list[dict[str, Any]] = []

    def run_trial(self, overrides: Mapping[str, Any]) -> TrialResult:
        self.calls.append(dict(overrides))
        if self.poison_first and len(self.calls) == 1:
            return TrialResult(dict(overrides), math.nan, {}, "poisoned by the kit")
        objective = self.create("objective", overrides)
        prepare_objective(objective, self.context)
        optimizer = self.create("optimizer", overrides)
        generator = torch.Generator().manual_seed(self.context.seed or 0)
        params = objective.init_params(generator)
        state = optimizer.init(params)
        oracle = Oracle(objective, SerialExecutor(), generator)
        for _ in range(self.iterations):
            params, state, _info = optimizer.step(params, state, oracle)
        score = float(objective.evaluate(params)["loss"])
        return TrialResult(dict(overrides), score if math.isfinite(score) else math.nan)

    def create(self, kind: str, overrides: Mapping[str, Any]) -> Any:
        spec = self.objective_spec if kind == "objective" else self.optimizer_spec
        return self.context.create(kind, _apply(spec, kind, overrides), f"kit inner {kind}")

    def hyper_context(self, completed: list[TrialResult] | None = None) -> HyperContext:
        seed = self.context.seed or 0
        return HyperContext(
            objective_spec=dict(self.objective_spec),
            optimizer_spec=dict(self.optimizer_spec),
            budget={"iterations": self.iterations},
            seed=seed,
            generator=torch.Generator().manual_seed(seed),
            run_trial=self.run_trial,
            create_objective=lambda o: self.create("objective", o),
            create_optimizer=lambda o: self.create("optimizer", o),
            record=lambda row: None,
            completed=list(completed or []),
            device=self.context.device,
            dtype=self.context.dtype,
            run_context=self.context,
        )


def _keys(configs: list[dict[str, Any]]) -> list[str]:
    return [repr(sorted(c.items())) for c in configs]


def check_hyperoptimizer(
    hyper: HyperOptimizer,
    *,
    seed: int = 0,
    iterations: int = 5,
    objective_spec: Mapping[str, Any] | None = None,
    optimizer_spec: Mapping[str, Any] | None = None,
    registry: Any = None,
) -> None:
    """Check the :class:`HyperOptimizer` contract on one configured instance.

    The inner pairing defaults to the kit's reference (``testing_quadratic`` and
    ``testing_gd``, which has an ``lr``: a space over ``optimizer.lr`` fits it) in a private
    registry; pass ``objective_spec``, ``optimizer_spec`` and ``registry`` to use your own.

    Checks: a ``name``; ``supports`` answers, with a reason when it refuses (a hyperoptimizer
    that refuses the pairing is checked no further: give it one it accepts); ``optimize``
    returns a :class:`HyperResult` whose ``best_config`` is a configuration it tried through
    ``run_trial`` (or a resumed one) with the best finite score, and ``best_score`` that
    score; every tried configuration is made of dotted ``objective.`` / ``optimizer.`` keys;
    two runs with the same seed try the same configurations; a failed trial (NaN score) is
    never chosen; a trial passed in ``completed`` (an interrupted run's) is not run again.
    """
    assert hyper.name, f"{type(hyper).__name__} has no 'name'"
    registry = registry if registry is not None else reference_registry()
    context = RunContext(registry=registry, seed=seed)
    objective_spec = dict(objective_spec or REFERENCE_OBJECTIVE)
    optimizer_spec = dict(optimizer_spec or REFERENCE_OPTIMIZER)

    def harness(poison_first: bool = False) -> _Harness:
        return _Harness(context, objective_spec, optimizer_spec, iterations, poison_first)

    probe = harness()
    support = hyper.supports(probe.create("objective", {}), probe.create("optimizer", {}))
    if not support.ok:
        assert support.reason, f"hyperoptimizer '{hyper.name}' refuses without a reason"
        return

    first = harness()
    result = hyper.optimize(first.hyper_context())
    assert isinstance(result, HyperResult), f"optimize returned {type(result).__name__}"
    assert first.calls, "optimize never called context.run_trial"
    for config in first.calls:
        bad = [k for k in config if not k.startswith(("objective.", "optimizer."))]
        assert not bad, f"tried keys {bad}: keys must be dotted 'objective.*' / 'optimizer.*'"
    finite = [t for t in result.trials if math.isfinite(t.score)]
    assert finite, f"no trial of the reference pairing succeeded: {result.trials}"
    best = min(t.score for t in finite)
    assert math.isfinite(result.best_score) and math.isclose(result.best_score, best), (
        f"best_score {result.best_score} is not the best finite trial score {best}"
    )
    assert _keys([result.best_config]) in [_keys([c]) for c in first.calls], (
        f"best_config {result.best_config} was never tried through run_trial"
    )
    chosen = [t for t in finite if _keys([t.config]) == _keys([result.best_config])]
    assert chosen and math.isclose(min(t.score for t in chosen), best), (
        f"best_config {result.best_config} is not the configuration of the best trial"
    )

    again = harness()
    hyper.optimize(again.hyper_context())
    assert _keys(again.calls) == _keys(first.calls), (
        "two runs with the same seed tried different configurations"
    )

    poisoned = harness(poison_first=True)
    picked = hyper.optimize(poisoned.hyper_context())
    if len(poisoned.calls) > 1:
        assert _keys([picked.best_config]) != _keys(poisoned.calls[:1]), (
            "the best config is a failed trial (NaN score): failed trials must never be chosen"
        )

    done = TrialResult(dict(first.calls[0]), best + 1.0, {}, None, 0.0)
    resumed = harness()
    hyper.optimize(resumed.hyper_context(completed=[done]))
    assert _keys([first.calls[0]])[0] not in _keys(resumed.calls), (
        f"the completed trial {first.calls[0]} was run again on resume"
    )
