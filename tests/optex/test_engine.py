"""The OptEx engine used directly: ``init`` on a flat point, then ``plan`` (the (N, d) points
to evaluate) and ``update`` (the evaluated gradients and losses -> the next flat iterate)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from optkit_optex.config import EstimatorConfig, OptExConfig
from optkit_optex.engine import Engine, EngineState, Round
from optkit_optex.flat import Flattener
from optkit_optex.rules import base_rule

from optkit.errors import DivergenceError
from optkit.interfaces import Objective
from optkit.oracle import Oracle
from optkit.registry import get_registry

REG = get_registry()


def objective(d: int = 30, noise: float = 0.0, fn: str = "rosenbrock") -> Objective:
    obj = REG.create("objective", {"name": fn, "dim": d, "noise": noise})
    obj.prepare(torch.device("cpu"), torch.float32)
    return obj


def by_hand(
    config: OptExConfig,
    obj: Objective,
    iters: int,
    *,
    fused: bool = True,
    seed: int = 2,
    lr: float = 0.05,
) -> tuple[torch.Tensor, list[tuple[Round, torch.Tensor, int]], EngineState]:
    """``iters`` engine iterations on ``obj`` (base Adam at ``lr``), the round evaluated
    through an oracle; the rounds with a copy of their points (the engine's buffer is reused
    by the next plan) and the point each one's true step started from."""
    gen = torch.Generator().manual_seed(seed)
    start = obj.init_params(gen)
    flat = Flattener(start)
    engine = Engine(config)
    base = REG.create("optimizer", {"name": "adam", "lr": lr})
    x = flat.flatten(start)
    state = engine.init(x, base_rule(base, flat, fused=fused))
    oracle = Oracle(obj, REG.create("executor", {"name": "serial"}), gen)
    rounds = []
    for _ in range(iters):
        planned = engine.plan(x, state)
        evaluation = oracle.evaluate([flat.unflatten(p) for p in planned.expanded()])
        grads = flat.flatten_many(evaluation.grads)
        x, state, info = engine.update(state, planned, grads, evaluation.losses)
        rounds.append((planned, planned.points.clone(), info.chosen))
    return x, rounds, state


def registered(spec: dict[str, Any], obj: Objective, iters: int, seed: int = 2) -> torch.Tensor:
    opt = REG.create(
        "optimizer", {"name": "optex", "base": "adam", "base_config": {"lr": 0.05}, **spec}
    )
    gen = torch.Generator().manual_seed(seed)
    params = obj.init_params(gen)
    state = opt.init(params)
    oracle = Oracle(obj, REG.create("executor", {"name": "serial"}), gen)
    for _ in range(iters):
        params, state, _ = opt.step(params, state, oracle)
    return params["x"]


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize(
    "options",
    [{}, {"next_iterate": "best"}, {"stop_variance": 0.2, "batches_per_point": 2}],
    ids=["defaults", "best", "stop-k2"],
)
def test_the_engine_by_hand_is_the_registered_optimizer(
    fused: bool, options: dict[str, Any]
) -> None:
    obj = objective(noise=0.5)
    config = OptExConfig.create(parallelism=3, **options)
    ours, _, _ = by_hand(config, obj, 6, fused=fused)
    theirs = registered({"parallelism": 3, "fused": fused, **options}, obj, 6)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


def test_plan_gives_the_points_and_update_takes_their_gradients() -> None:
    n, d = 4, 30
    config = OptExConfig(parallelism=n, estimator=EstimatorConfig(history=12, fit_lag=0))
    x, rounds, state = by_hand(config, objective(d), 3)
    (first, p1, _), (second, p2, _) = rounds[0], rounds[1]
    # empty history: N copies of the start point, no proxy steps
    assert not first.ran and p1.shape == (n, d) and first.counts == [1] * n
    assert torch.equal(p1, p1[:1].expand(n, -1))
    # then a proxy trajectory of N distinct points
    assert second.ran and p2.shape == (n, d) and second.workers() == n
    assert all(not torch.equal(p2[i], p2[i + 1]) for i in range(n - 1))
    assert state.iteration == 3 and state.estimator.size == 3 * n
    # the next iterate is fresh, not a view of the engine's buffers
    assert x.shape == (d,) and x.data_ptr() != state.P.data_ptr()


def test_a_stopped_trajectory_sends_every_worker_to_its_last_point() -> None:
    config = OptExConfig(parallelism=3, batches_per_point=2, stop_variance=1e-12)
    _, rounds, _ = by_hand(config, objective(noise=1.0), 8)
    stopped = [r for r, points, _ in rounds if points.shape[0] == 1]
    assert len(stopped) >= 3
    for planned in stopped:
        assert planned.counts == [6] and planned.workers() == 6
        assert torch.equal(planned.expanded(), planned.points.expand(6, -1))


def test_update_stores_the_mean_of_each_points_gradients() -> None:
    d, n, k = 8, 2, 3
    config = OptExConfig(parallelism=n, batches_per_point=k, estimator=EstimatorConfig(history=4))
    engine = Engine(config)
    base = REG.create("optimizer", {"name": "sgd", "lr": 0.1})
    x0 = torch.zeros(d)
    state = engine.init(x0, base_rule(base, Flattener({"x": x0}), fused=True))
    planned = engine.plan(x0, state)
    assert planned.index == [0, 0, 0, 1, 1, 1]
    grads = torch.arange(n * k * d, dtype=torch.float32).view(n * k, d)
    losses = torch.tensor([3.0, 4.0, 5.0, 1.0, 1.0, 1.0])
    new, _, info = engine.update(state, planned, grads, losses)
    stored = state.estimator.G[:n]
    torch.testing.assert_close(stored, grads.view(n, k, d).mean(1))
    assert info.losses == [4.0, 1.0] and info.loss == 4.0 and info.chosen == n - 1
    torch.testing.assert_close(new, x0 - 0.1 * stored[-1])  # one SGD step on the mean
    assert info.extras["optex_points"] == float(n)


def test_a_non_finite_gradient_is_refused_when_the_engine_checks() -> None:
    config = OptExConfig(parallelism=2)
    engine = Engine(config, check_finite=True)
    base = REG.create("optimizer", {"name": "sgd", "lr": 0.1})
    x0 = torch.zeros(5)
    state = engine.init(x0, base_rule(base, Flattener({"x": x0}), fused=True))
    planned = engine.plan(x0, state)
    grads = torch.ones(2, 5)
    grads[1, 3] = float("inf")
    with pytest.raises(DivergenceError, match="point 1 of iteration 1"):
        engine.update(state, planned, grads, torch.zeros(2))
    assert state.estimator.size == 0
