"""One optimization: an objective, an optimizer and an executor from a seed within a budget.

``wall_s`` counts optimization time only (``optimizer.step`` calls, GPU synchronized where it
is read), not the time spent evaluating metrics.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from optkit.errors import ConfigError, DivergenceError
from optkit.interfaces import Executor, Objective, Optimizer, StepInfo
from optkit.oracle import Oracle
from optkit.progress import Progress
from optkit.tasks import Budget


def stderr_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def quiet(message: str) -> None:
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def score_of(metrics: Mapping[str, float], objective: Objective, metric: str) -> float:
    """The value to minimize: ``metrics[metric]``, negated for metrics the objective maximizes."""
    if metric not in metrics:
        raise ConfigError(
            f"score metric '{metric}' is not reported by objective '{objective.name}';"
            f" it reports: {', '.join(sorted(metrics))}"
        )
    value = float(metrics[metric])
    return -value if objective.metric_direction().get(metric, "min") == "max" else value


def run_loop(
    objective: Objective,
    optimizer: Optimizer,
    executor: Executor,
    seed: int,
    budget: Budget,
    score_metric: str,
    on_eval: Callable[[dict[str, Any]], None] | None = None,
    progress: Progress = quiet,
    what: str = "",
) -> dict[str, Any]:
    """Optimize one prepared objective from ``seed`` within ``budget``.

    Returns:
        The last evaluation row (iteration, counters, wall_s, ``loss`` and metrics).

    Raises:
        DivergenceError: a loss or gradient became non-finite.
    """
    device = objective.device
    generator = torch.Generator().manual_seed(seed)
    params = objective.init_params(generator)
    state = optimizer.init(params)
    # On a GPU each round's finite check is read one round late (settled before every
    # evaluation row and at the end), so steps queue their work without waiting for the device.
    oracle = Oracle(objective, executor, generator, defer_check=device.type == "cuda")
    wall = 0.0
    info = StepInfo()
    last_report = time.perf_counter()

    def evaluation(iteration: int, extras: dict[str, float]) -> dict[str, Any]:
        oracle.settle()
        minibatch_loss = info.loss  # read here only: on a GPU a read waits for the device
        if math.isinf(minibatch_loss):
            raise DivergenceError(f"minibatch loss {minibatch_loss} at iteration {iteration}")
        metrics = objective.evaluate(params)
        loss = metrics.get("loss", float("nan"))
        if not math.isfinite(float(loss)):
            raise DivergenceError(f"the objective's loss is {loss} at iteration {iteration}")
        row = {
            "iteration": iteration,
            "sequential_steps": oracle.sequential_steps,
            "grad_evals": oracle.grad_evals,
            "wall_s": wall,
            "minibatch_loss": minibatch_loss,
            **{k: float(v) for k, v in metrics.items()},
            **extras,
        }
        if on_eval is not None:
            on_eval(row)
        return row

    last = evaluation(0, {})
    for iteration in range(1, budget.iterations + 1):
        start = time.perf_counter()
        params, state, info = optimizer.step(params, state, oracle)
        reads_wall = budget.time_s is not None or iteration % budget.eval_every == 0
        if reads_wall or iteration == budget.iterations:
            _sync(device)  # count the device's work in wall_s (else the next step waits for it)
        wall += time.perf_counter() - start
        out_of_time = budget.time_s is not None and wall >= budget.time_s
        final = iteration == budget.iterations or out_of_time
        if iteration % budget.eval_every == 0 or final:
            last = evaluation(iteration, dict(info.extras))
            if budget.target is not None and score_of(last, objective, score_metric) <= (
                budget.target
            ):
                break
        if out_of_time:
            break
        now = time.perf_counter()
        if now - last_report > 10.0:
            progress(f"    {what} iteration {iteration}/{budget.iterations}, {wall:.1f} s")
            last_report = now
    return last
