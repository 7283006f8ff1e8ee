"""A hyperoptimizer cell: the hyperoptimizer chooses, the runner runs and records each trial."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch

from optkit.context import prepare_objective
from optkit.errors import EnvironmentProblem, OptkitError
from optkit.interfaces import HyperContext, HyperOptimizer, TrialResult
from optkit.runner.loop import run_loop, score_of
from optkit.tasks import Cell

if TYPE_CHECKING:
    from optkit.runner.cell import CellRunner


def _json_plain(value: Any) -> bool:
    """Numbers, strings, and lists/dicts of them: what an ``end`` row can carry as is."""
    if isinstance(value, (int, float, str, bool)) or value is None:
        return True
    if isinstance(value, (list, tuple)):
        return all(_json_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_plain(v) for k, v in value.items())
    return False


def hyper_context(
    runner: CellRunner,
    cell: Cell,
    budget: Any,
    run_trial: Callable[[Mapping[str, Any]], TrialResult],
    completed: list[TrialResult],
) -> HyperContext:
    """What a hyperoptimizer of ``cell`` is given: the inner pairing's specs, ``budget`` (a
    :class:`~optkit.tasks.Budget`), a generator and the run context seeded by the cell's seed,
    ``run_trial``, the trials a resumed run already finished, and the runner's factories for
    the inner components. Shared by hyperoptimizer cells and the ``[tuning]`` phase."""
    return HyperContext(
        objective_spec=cell.objective.spec(),
        optimizer_spec=cell.optimizer.spec(),
        budget=dict(vars(budget)),
        seed=cell.seed,
        generator=torch.Generator().manual_seed(cell.seed),
        run_trial=run_trial,
        create_objective=lambda o: runner.create_inner("objective", cell, o),
        create_optimizer=lambda o: runner.create_inner("optimizer", cell, o),
        record=lambda row: runner.emit(cell, {"event": "trace", **row}),
        completed=completed,
        device=runner.device,
        dtype=runner.dtype,
        run_context=runner.context.replace(seed=cell.seed),
    )


def run_hyper_cell(
    runner: CellRunner, cell: Cell, previous_rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """Run one hyperoptimizer cell: the hyperoptimizer drives trials through ``run_trial``
    (each trial's rows recorded by ``runner``, the cell's :class:`CellRunner`); returns the
    ``end`` row's fields (best config and score, trial count, plain extras)."""
    assert cell.hyperoptimizer is not None
    spec = cell.hyperoptimizer
    cell_context = runner.context.replace(seed=cell.seed)
    hyper: HyperOptimizer = cell_context.create("hyperoptimizer", spec.spec(), spec.where)
    trial_counter = [len([r for r in previous_rows if r.get("event") == "trial"])]

    def run_trial(overrides: Mapping[str, Any]) -> TrialResult:
        start = time.perf_counter()
        index = trial_counter[0]
        trial_counter[0] += 1
        try:
            context = runner.context.replace(seed=cell.seed)
            inner_objective = runner.create_inner("objective", cell, overrides)
            prepare_objective(inner_objective, context)
            inner_optimizer = runner.create_inner("optimizer", cell, overrides)
            executor = context.create(
                "executor", runner.task.executor.spec(), runner.task.executor.where
            )
            executor.bind(inner_objective)
            try:
                final = run_loop(
                    inner_objective,
                    inner_optimizer,
                    executor,
                    cell.seed,
                    runner.task.budget,
                    runner.task.score,
                )
            finally:
                executor.close()
            metrics = {k: v for k, v in final.items() if isinstance(v, (int, float))}
            result = TrialResult(
                dict(overrides),
                score_of(final, inner_objective, runner.task.score),
                metrics,
                None,
                time.perf_counter() - start,
            )
        except EnvironmentProblem:
            raise
        except (OptkitError, RuntimeError, ValueError) as exc:
            result = TrialResult(
                dict(overrides),
                float("nan"),
                {},
                f"{type(exc).__name__}: {exc}",
                time.perf_counter() - start,
            )
        runner.emit(
            cell,
            {
                "event": "trial",
                "trial": index,
                "trial_config": result.config,
                "score": result.score,
                "error": result.error,
                "trial_wall_s": result.cost_s,
                **result.metrics,
            },
        )
        return result

    completed = [
        TrialResult(
            r.get("trial_config", {}),
            float("nan") if r.get("score") is None else float(r["score"]),
            {},
            r.get("error"),
            float(r.get("trial_wall_s") or 0.0),
        )
        for r in previous_rows
        if r.get("event") == "trial"
    ]
    context = hyper_context(runner, cell, runner.task.budget, run_trial, completed)
    result = hyper.optimize(context)
    return {
        "best_config": result.best_config,
        "best_score": result.best_score,
        "trials": len(result.trials),
        **{k: v for k, v in result.extras.items() if _json_plain(v)},
    }
