"""Executor overhead: one parallel round of N fresh points through ``Oracle.evaluate`` with
the ``serial`` and ``vmap`` executors on Rosenbrock (whose gradient is nearly free, so what
is timed is the executor's and the oracle's own work). The ``ray`` executor's round trip is
``tests/ray``'s business and needs a Ray cluster; it is not timed here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

import optkit
from optkit.interfaces import Evaluation, Objective

from .conftest import Size


def round_of(executor: str, objective: Objective, size: Size) -> Callable[[], Evaluation]:
    """A closure evaluating N new points (moved each call, as OptEx sends them) per call."""
    registry = optkit.get_registry()
    generator = torch.Generator().manual_seed(0)
    oracle = optkit.Oracle(objective, registry.create("executor", {"name": executor}), generator)
    start = objective.init_params(generator)["x"]
    offsets = torch.linspace(0.0, 0.01, size.parallelism)
    calls = iter(range(10**9))

    def evaluate() -> Evaluation:
        shift = 1e-4 * next(calls)
        return oracle.evaluate([{"x": start + o + shift} for o in offsets])

    return evaluate


@pytest.mark.parametrize("executor", ["serial", "vmap"])
def test_round(
    executor: str,
    size: Size,
    measure: Callable[[Callable[[], Any]], Any],
    make_objective: Callable[[dict[str, Any]], Objective],
) -> None:
    objective = make_objective({"name": "rosenbrock", "dim": size.dim})
    evaluation = measure(round_of(executor, objective, size))
    assert evaluation.losses.shape == (size.parallelism,)
    # both executors compute the same gradients (the serial loop is the reference)
    other = "vmap" if executor == "serial" else "serial"
    reference = round_of(other, objective, size)()
    first = round_of(executor, objective, size)()
    for mine, theirs in zip(first.grads, reference.grads, strict=True):
        torch.testing.assert_close(mine["x"], theirs["x"])
