"""Hand-built HyperContexts for the hyperoptimizer tests.

``pairing_context`` runs the inner pairing for real (registry + Oracle loop, dotted overrides
applied to the inner specs), as the task runner does; ``function_context`` scores a config
with a cheap known function of the config (a black box whose optimum is known).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

import optkit
from optkit.errors import OptkitError
from optkit.interfaces import HyperContext, TrialResult
from optkit.oracle import Oracle


def apply_overrides(spec: dict[str, Any], kind: str, overrides: Mapping[str, Any]) -> dict:
    """``spec`` with the ``kind.``-prefixed dotted overrides applied (list index: integer)."""
    spec = copy.deepcopy(spec)
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if head != kind:
            continue
        parts = rest.split(".")
        node: Any = spec
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if isinstance(node, list):
            node[int(parts[-1])] = value
        else:
            node[parts[-1]] = value
    return spec


@dataclass
class Recorder:
    """What the hyperoptimizer did through the context: trial configs and trace rows."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)


def make_context(
    run: Callable[[Mapping[str, Any]], TrialResult],
    *,
    seed: int = 0,
    completed: list[TrialResult] | None = None,
    objective_spec: dict[str, Any] | None = None,
    optimizer_spec: dict[str, Any] | None = None,
) -> tuple[HyperContext, Recorder]:
    recorder = Recorder()
    reg = optkit.get_registry()

    def run_trial(overrides: Mapping[str, Any]) -> TrialResult:
        recorder.calls.append(dict(overrides))
        return run(overrides)

    objective_spec = objective_spec or {"name": "sphere", "dim": 2}
    optimizer_spec = optimizer_spec or {"name": "sgd"}
    context = HyperContext(
        objective_spec=objective_spec,
        optimizer_spec=optimizer_spec,
        budget={"iterations": 1},
        seed=seed,
        generator=torch.Generator().manual_seed(seed),
        run_trial=run_trial,
        create_objective=lambda o: reg.create(
            "objective", apply_overrides(objective_spec, "objective", o)
        ),
        create_optimizer=lambda o: reg.create(
            "optimizer", apply_overrides(optimizer_spec, "optimizer", o)
        ),
        record=recorder.rows.append,
        completed=list(completed or []),
    )
    return context, recorder


def pairing_context(
    objective_spec: dict[str, Any],
    optimizer_spec: dict[str, Any],
    iterations: int,
    seed: int = 0,
    completed: list[TrialResult] | None = None,
) -> tuple[HyperContext, Recorder]:
    """A context whose ``run_trial`` trains the inner pairing for ``iterations`` steps from
    ``seed`` and scores the final ``evaluate()['loss']``; an inner run that raises (divergence,
    a bad config) is a failed trial: ``nan`` score and the error."""
    reg = optkit.get_registry()

    def run(overrides: Mapping[str, Any]) -> TrialResult:
        start = time.perf_counter()
        try:
            obj = reg.create("objective", apply_overrides(objective_spec, "objective", overrides))
            obj.prepare(torch.device("cpu"), torch.float32)
            opt = reg.create("optimizer", apply_overrides(optimizer_spec, "optimizer", overrides))
            gen = torch.Generator().manual_seed(seed)
            params = obj.init_params(gen)
            state = opt.init(params)
            oracle = Oracle(obj, reg.create("executor", {"name": "serial"}), gen)
            for _ in range(iterations):
                params, state, _info = opt.step(params, state, oracle)
            metrics = obj.evaluate(params)
            score = float(metrics["loss"])
            error = None if math.isfinite(score) else f"final loss {score}"
            return TrialResult(dict(overrides), score, metrics, error, time.perf_counter() - start)
        except (OptkitError, RuntimeError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            return TrialResult(dict(overrides), math.nan, {}, error, time.perf_counter() - start)

    return make_context(
        run,
        seed=seed,
        completed=completed,
        objective_spec=objective_spec,
        optimizer_spec=optimizer_spec,
    )


def function_context(
    f: Callable[[Mapping[str, Any]], float],
    seed: int = 0,
    completed: list[TrialResult] | None = None,
    objective_spec: dict[str, Any] | None = None,
    optimizer_spec: dict[str, Any] | None = None,
) -> tuple[HyperContext, Recorder]:
    """A context whose trial score is ``f(config)`` (``nan`` -> failed with an error)."""

    def run(overrides: Mapping[str, Any]) -> TrialResult:
        score = float(f(overrides))
        error = None if math.isfinite(score) else "the black box returned nan"
        return TrialResult(dict(overrides), score, {"loss": score}, error, 0.0)

    return make_context(
        run,
        seed=seed,
        completed=completed,
        objective_spec=objective_spec,
        optimizer_spec=optimizer_spec,
    )


@pytest.fixture
def pairing() -> Callable[..., tuple[HyperContext, Recorder]]:
    """Factory: :func:`pairing_context` (real inner runs)."""
    return pairing_context


@pytest.fixture
def black_box() -> Callable[..., tuple[HyperContext, Recorder]]:
    """Factory: :func:`function_context` (a cheap known function of the config)."""
    return function_context
