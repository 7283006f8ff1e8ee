"""A hyperoptimizer cell: the hyperoptimizer chooses, the runner runs and records each trial.

The ``end`` row of a hyperoptimizer cell carries ``best_config``, ``best_score``, the trial
count and the plain extras of the hyperoptimizer's result, and ``directions``: the metrics it
reports (:func:`reported_metrics`) with their direction. In a task with ``[target]`` the cell
also writes one ``eval`` row with those metrics' final values, so that a comparison report
reads them as it reads a plain cell's last evaluation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from optkit.context import prepare_objective
from optkit.errors import EnvironmentProblem, OptkitError
from optkit.interfaces import HyperContext, HyperOptimizer, TrialResult
from optkit.runner.loop import run_loop, score_of
from optkit.tasks import Cell

if TYPE_CHECKING:
    from optkit.runner.cell import CellRunner
    from optkit.tasks import Budget


def _json_plain(value: Any) -> bool:
    """Numbers, strings, and lists/dicts of them: what an ``end`` row can carry as is."""
    if isinstance(value, (int, float, str, bool)) or value is None:
        return True
    if isinstance(value, (list, tuple)):
        return all(_json_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_plain(v) for k, v in value.items())
    return False


def reported_metrics(hyper: Any) -> dict[str, str]:
    """The metrics the ``end`` row of ``hyper``'s cell carries, ``{name: "min" | "max"}``.

    Every hyperoptimizer cell reports ``best_score`` (the hyperoptimizer's own score, lower
    is better). A hyperoptimizer declares the other numbers of its result's ``extras`` with an
    optional method ``reported_metrics() -> {name: "min" | "max"}`` (config-dependent, so a
    method of the instance); ``[tuning].score`` and ``[target].metric`` of a task with
    hyperoptimizer cells must be one of these names.
    """
    declared = getattr(hyper, "reported_metrics", None)
    out = {"best_score": "min"}
    if callable(declared):
        out.update({str(k): str(v) for k, v in dict(declared()).items()})
    return out


def hyper_context(
    runner: CellRunner,
    cell: Cell,
    budget: Any,
    run_trial: Callable[[Mapping[str, Any]], TrialResult],
    completed: list[TrialResult],
    run_batch: Callable[[Sequence[Mapping[str, Any]]], list[TrialResult]] | None = None,
) -> HyperContext:
    """What a hyperoptimizer of ``cell`` is given: the inner pairing's specs, ``budget`` (a
    :class:`~optkit.tasks.Budget`), a generator and the run context seeded by the cell's seed,
    ``run_trial`` (and ``run_batch``, several trials at once, where the caller has a batch
    path: the ``[tuning]`` phase), the trials a resumed run already finished, and the
    runner's factories for the inner components. Shared by hyperoptimizer cells and the
    ``[tuning]`` phase."""
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
        run_batch=run_batch,
    )


def run_hyper_cell(
    runner: CellRunner,
    cell: Cell,
    previous_rows: list[dict[str, Any]],
    budget: Budget | None = None,
) -> dict[str, Any]:
    """Run one hyperoptimizer cell: the hyperoptimizer drives trials through ``run_trial``
    (each trial's rows recorded by ``runner``, the cell's :class:`CellRunner`); returns the
    ``end`` row's fields (best config and score, trial count, plain extras, ``directions``).

    Args:
        budget: what the hyperoptimizer and its trials are given (default: the task's
            ``budget``; a ``[tuning]`` trial passes ``tuning.budget``).
    """
    assert cell.hyperoptimizer is not None
    budget = budget if budget is not None else runner.task.budget
    started = time.perf_counter()
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
                    budget,
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
    context = hyper_context(runner, cell, budget, run_trial, completed)
    result = hyper.optimize(context)
    directions = reported_metrics(hyper)
    end = {
        **{k: v for k, v in result.extras.items() if _json_plain(v)},
        "best_config": result.best_config,
        "best_score": result.best_score,
        "trials": len(result.trials),
        "directions": directions,
        "optimizer_spec": cell.optimizer.spec(),  # as run: a tuned cell's chosen config
    }
    if runner.task.target is not None:  # the final values, where a report looks for them
        finals = {k: end[k] for k in directions if _number(end.get(k))}
        runner.emit(
            cell,
            {
                "event": "eval",
                "iteration": budget.iterations,
                "sequential_steps": budget.iterations,
                "grad_evals": None,
                "wall_s": time.perf_counter() - started,
                **finals,
            },
        )
    return end


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
