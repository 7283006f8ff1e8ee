"""One optimizer iteration through the framework (registry optimizer, ``Oracle``, ``vmap``
executor) on Rosenbrock, and the framework's overhead against a plain ``torch.optim.Adam``
loop on the same objective: the CPU counterpart of ``benchmarks/optex_gpu.py``'s goal (issue
18, point 7: a registered first-order iteration within 1.1x of the plain loop)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch

import optkit
from optkit.interfaces import Objective, Params

from .conftest import Size

LR = 0.01


def wrapper_spec(name: str, n: int) -> dict[str, Any]:
    return {"name": name, "base": "adam", "base_config": {"lr": LR}, "parallelism": n}


def specs(n: int) -> dict[str, dict[str, Any]]:
    """The optimizers timed per iteration, by label."""
    return {
        "adam": {"name": "adam", "lr": LR},
        "optex": wrapper_spec("optex", n),
        "optex_refit10": {**wrapper_spec("optex", n), "refit_every": 10},
        "data_parallel": wrapper_spec("data_parallel", n),
        "target": wrapper_spec("target", n),
    }


class FrameworkLoop:
    """A registered optimizer stepping through an ``Oracle`` (what ``optkit run`` does per
    iteration, without evaluation or logging)."""

    def __init__(self, objective: Objective, spec: dict[str, Any], seed: int = 0) -> None:
        registry = optkit.get_registry()
        generator = torch.Generator().manual_seed(seed)
        self.optimizer = registry.create("optimizer", spec)
        self.params = objective.init_params(generator)
        self.state = self.optimizer.init(self.params)
        self.oracle = optkit.Oracle(
            objective, registry.create("executor", {"name": "vmap"}), generator
        )

    def step(self) -> None:
        self.params, self.state, _ = self.optimizer.step(self.params, self.state, self.oracle)


class PlainLoop:
    """The same objective trained by hand: leaf tensors, ``backward``, ``torch.optim.Adam``."""

    def __init__(self, objective: Objective, seed: int = 0) -> None:
        self.objective = objective
        self.generator = torch.Generator().manual_seed(seed)
        start = objective.init_params(self.generator)
        self.leaves = {k: v.clone().requires_grad_(True) for k, v in start.items()}
        self.optimizer = torch.optim.Adam(list(self.leaves.values()), lr=LR)

    def step(self) -> None:
        batch = self.objective.sample_batch(self.generator, self.leaves)
        self.optimizer.zero_grad(set_to_none=True)
        self.objective.loss(self.leaves, batch).backward()
        self.optimizer.step()

    @property
    def params(self) -> Params:
        return {k: v.detach() for k, v in self.leaves.items()}


class Counted:
    """``fn`` that counts its calls in :attr:`n` (whatever rounds pytest-benchmark chose)."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn, self.n = fn, 0

    def __call__(self) -> None:
        self.n += 1
        self.fn()


@pytest.mark.optex
@pytest.mark.parametrize("label", list(specs(2)))
def test_iteration(
    label: str,
    size: Size,
    measure: Callable[[Callable[[], Any]], Any],
    make_objective: Callable[[dict[str, Any]], Objective],
) -> None:
    """Milliseconds per iteration of each optimizer (N = ``size.parallelism``) on Rosenbrock."""
    objective = make_objective({"name": "rosenbrock", "dim": size.dim})
    loop = FrameworkLoop(objective, specs(size.parallelism)[label])
    start = objective.evaluate(loop.params)["loss"]
    for _ in range(3):  # OptEx's history is filled from its second iteration
        loop.step()
    steps_before = loop.oracle.sequential_steps
    calls = Counted(loop.step)
    measure(calls)
    assert loop.oracle.sequential_steps == steps_before + calls.n  # one round per iteration
    assert objective.evaluate(loop.params)["loss"] < start


def test_framework_overhead(
    size: Size,
    benchmark: Any,
    measure: Callable[[Callable[[], Any]], Any],
    make_objective: Callable[[dict[str, Any]], Objective],
) -> None:
    """The registered ``adam`` against a plain ``torch.optim.Adam`` loop, same objective,
    seed and learning rate. One call steps both, each timed on its own, so that drifts of the
    machine hit both alike; the medians and their ratio (the framework's per-iteration
    overhead) go to the JSON's ``extra_info`` (``framework_ms``, ``plain_ms``, ``ratio``)."""
    objective = make_objective({"name": "rosenbrock", "dim": size.dim, "noise": 1.0})
    loops: dict[str, FrameworkLoop | PlainLoop] = {
        "framework": FrameworkLoop(objective, specs(1)["adam"]),
        "plain": PlainLoop(objective),
    }
    seconds: dict[str, list[float]] = {name: [] for name in loops}

    def both() -> None:
        for name, loop in loops.items():
            t = time.perf_counter()
            loop.step()
            seconds[name].append(time.perf_counter() - t)

    measure(both)
    framework_ms, plain_ms = (1e3 * statistics.median(seconds[k]) for k in loops)
    benchmark.extra_info.update(
        parallelism=1, framework_ms=framework_ms, plain_ms=plain_ms, ratio=framework_ms / plain_ms
    )
    # the two loops are the same computation: after the same number of steps from the same
    # seed (same start, same noise draws) they hold the same parameters
    for key, value in loops["framework"].params.items():
        torch.testing.assert_close(value, loops["plain"].params[key], rtol=1e-5, atol=1e-5)
