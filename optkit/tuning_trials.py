"""The trials of a ``[tuning]`` search, one at a time or in batches a launcher runs in parallel.

A search (:func:`optkit.tuning.run_search`) gives its hyperoptimizer two ways to run trials:
``HyperContext.run_trial`` (one trial, in this process) and ``HyperContext.run_batch`` (behind
``HyperContext.run_trials``: several configurations proposed at once). A batch goes to the
run's launcher as a :class:`~optkit.interfaces.CellBatch` whose "cells" are
:class:`TrialJob` s:

* ``local`` runs them one after the other in this process (``run_here``), exactly as
  ``run_trial`` in a loop would;
* ``ray`` ships each as a plain payload to its own Ray task, which rebuilds the task and its
  registry from the worker's environment (:func:`run_trial_payload`, as
  :func:`optkit.runner.run_cell_payload` does for cells) and returns the trial's row; the
  rows are written to the run directory as trials finish (so ``--resume`` keeps them) and the
  results go back to the hyperoptimizer in the batch's order.

A trial is deterministic given its overrides and the tuning seeds, so the scores, and hence
the choices, do not depend on where or in which order the trials ran. Each ``trial`` row
carries ``trial_pid``, the process that ran it. A trial that fails is a row with
``status = "failed"`` (or ``"diverged"``) and a ``nan`` score, wherever it ran; a batch whose
launcher fails (a Ray worker that died three times) records its trials without a row as
failed with that error, and the search goes on.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from optkit.errors import DivergenceError, EnvironmentProblem, OptkitError
from optkit.interfaces import CellBatch, Launcher, TrialResult
from optkit.tuning_spec import TuningSpec, plain_config

if TYPE_CHECKING:
    from optkit.runner.cell import CellRunner
    from optkit.tuning import TuningCell

TRIAL_KEYS = frozenset(
    {
        "event",
        "trial",
        "trial_config",
        "trial_overrides",
        "score",
        "score_metric",
        "status",
        "error",
        "trial_wall_s",
        "tuning_seeds",
        "trial_pid",
    }
)
"""The fields of a ``trial`` row besides the cell's base fields and the trial's metrics."""


@dataclass(frozen=True)
class TrialJob:
    """One trial of a batch, as a launcher sees it (``key`` names it in progress lines)."""

    key: str
    index: int
    overrides: dict[str, Any]


@dataclass
class Search:
    """What every trial of one search needs, in the driver or in a remote worker.

    Attributes:
        direction: ``"min"`` or ``"max"``, of ``tuning.score`` (a trial's score is negated
            for ``"max"``, so lower is better).
        inner_runner: runs a trial's inner hyperoptimizer cell (rows discarded), for a
            search of a hyperoptimizer cell's label; ``None`` otherwise.
    """

    runner: CellRunner
    cell: TuningCell
    tuning: TuningSpec
    optimizer_cls: type
    direction: str
    inner_runner: CellRunner | None


def make_search(runner: CellRunner, cell: TuningCell) -> Search:
    """The :class:`Search` of ``cell`` under ``runner``'s task and registry."""
    from optkit.runner.hyper_cell import reported_metrics
    from optkit.tuning import _discarding_runner, _tuning

    task = runner.task
    tuning = _tuning(task)
    registry = runner.registry
    if cell.hyperoptimizer is None:
        directions = runner.create_inner("objective", cell, {}).metric_direction()
    else:
        spec = cell.hyperoptimizer
        directions = reported_metrics(registry.create("hyperoptimizer", spec.spec(), spec.where))
    return Search(
        runner,
        cell,
        tuning,
        registry.get("optimizer", cell.optimizer.name),
        directions.get(tuning.score, "min"),
        _discarding_runner(task, registry) if cell.hyperoptimizer else None,
    )


def run_one(search: Search, overrides: Mapping[str, Any], index: int) -> TrialResult:
    """Run trial ``index`` with ``overrides`` on every tuning seed in this process, emit its
    ``trial`` row through ``search.runner`` and return its result.

    A trial that raises (anything but :class:`EnvironmentProblem`, which stops the run) is a
    failed trial; a non-finite score is a diverged one.
    """
    from optkit.context import prepare_objective
    from optkit.runner import run_loop, score_of
    from optkit.tuning import _hyper_score, _hyper_trial, _mean_metrics

    runner, cell, tuning = search.runner, search.cell, search.tuning
    start = time.perf_counter()
    status, error = "ok", None
    finals: list[dict[str, Any]] = []
    score, metrics = math.nan, {}
    try:
        if search.inner_runner is not None:  # a trial is the whole hyperoptimizer cell
            for seed in tuning.seeds:
                finals.append(_hyper_trial(search.inner_runner, cell, overrides, seed, tuning))
            score = statistics.fmean(
                _hyper_score(f, tuning.score, search.direction, cell) for f in finals
            )
        else:
            task = runner.task
            objective = runner.create_inner("objective", cell, overrides)
            prepare_objective(objective, runner.context.replace(seed=cell.seed))
            executor = runner.registry.create("executor", task.executor.spec(), task.executor.where)
            executor.bind(objective)
            try:
                for seed in tuning.seeds:
                    optimizer = runner.create_inner("optimizer", cell, overrides)
                    finals.append(
                        run_loop(objective, optimizer, executor, seed, tuning.budget, tuning.score)
                    )
            finally:
                executor.close()
            score = statistics.fmean(score_of(f, objective, tuning.score) for f in finals)
        metrics = _mean_metrics(finals)
    except EnvironmentProblem:
        raise
    except DivergenceError as exc:
        status, error = "diverged", f"seed {tuning.seeds[len(finals)]}: {exc}"
    except Exception as exc:  # a bad config or a bug in a plugin fails this trial only
        status, error = "failed", f"{type(exc).__name__}: {exc}"
    if status == "ok" and not math.isfinite(score):
        status, error = "diverged", f"score {tuning.score} = {score}"
    result = TrialResult(dict(overrides), score, metrics, error, time.perf_counter() - start)
    runner.emit(cell, trial_row(search, result, index, status))
    return result


def trial_row(search: Search, result: TrialResult, index: int, status: str) -> dict[str, Any]:
    """The fields of trial ``index``'s row (the runner adds the cell's base fields)."""
    tuning = search.tuning
    return {
        **result.metrics,
        "event": "trial",
        "trial": index,
        "trial_config": plain_config(tuning, search.optimizer_cls, result.config),
        "trial_overrides": dict(result.config),
        "score": result.score,
        "score_metric": tuning.score,
        "status": status,
        "error": result.error,
        "trial_wall_s": result.cost_s,
        "tuning_seeds": list(tuning.seeds),
        "trial_pid": os.getpid(),
    }


def result_of_row(row: Mapping[str, Any]) -> TrialResult:
    """The :class:`TrialResult` a ``trial`` row records (its metrics: the row's numbers that
    are neither base fields nor :data:`TRIAL_KEYS`)."""
    base = {"task", "cell", "objective", "optimizer", "label", "hyperoptimizer", "seed", "phase"}
    metrics = {
        k: float(v)
        for k, v in row.items()
        if k not in TRIAL_KEYS
        and k not in base
        and isinstance(v, (int, float))
        and not isinstance(v, bool)
    }
    score = row.get("score")
    return TrialResult(
        dict(row.get("trial_overrides") or {}),
        math.nan if score is None else float(score),
        metrics,
        row.get("error"),
        float(row.get("trial_wall_s") or 0.0),
    )


def run_batch(
    search: Search,
    launcher: Launcher,
    overrides: Sequence[Mapping[str, Any]],
    indices: Sequence[int],
) -> list[TrialResult]:
    """Run the trials numbered ``indices`` with ``overrides`` (one each) through
    ``launcher``; their results in order. Rows reach the run directory as each trial ends.

    Raises:
        EnvironmentProblem: from a trial run here (the machine, not the trial: the run stops).
    """
    runner, cell = search.runner, search.cell
    jobs = [
        TrialJob(f"{cell.key}#{i}", i, dict(o)) for i, o in zip(indices, overrides, strict=True)
    ]
    got: dict[int, TrialResult] = {}

    def run_here(job: TrialJob) -> tuple[bool, str]:
        got[job.index] = result = run_one(search, job.overrides, job.index)
        return result.error is None, result.error or f"score {result.score:.4g}"

    def payload(job: TrialJob) -> dict[str, Any]:
        task = runner.task
        return {
            "task": task.raw,
            "source": task.source,
            "cell": cell.key,
            "trial": job.index,
            "overrides": job.overrides,
        }

    def deliver(rows: list[dict[str, Any]]) -> None:
        from optkit.runner.trial_runner import TrialRunner

        if isinstance(runner, TrialRunner):
            runner.append(rows)
        else:
            runner.run.append(rows)
        for row in rows:
            if row.get("event") == "trial":
                got[int(row["trial"])] = result_of_row(row)

    from optkit.runner.loop import quiet

    problem = "the launcher returned no row for it"
    try:
        launcher.launch(CellBatch(jobs, run_here, payload, run_trial_payload, deliver, quiet))
    except EnvironmentProblem:
        raise
    except Exception as exc:  # e.g. a Ray worker that died on every retry
        problem = f"the launcher failed: {type(exc).__name__}: {exc}"
    results = []
    for job in jobs:
        if job.index not in got:
            lost = TrialResult(dict(job.overrides), math.nan, {}, problem, 0.0)
            runner.emit(cell, trial_row(search, lost, job.index, "failed"))
            got[job.index] = lost
        results.append(got[job.index])
    return results


def run_trial_payload(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Run one trial described by plain data and return its rows (a Ray task's entry).

    ``payload``: ``{"task": raw task dict, "source": str, "cell": the search's key, "trial":
    its index, "overrides": {dotted key: value}}``. The worker loads plugins from its own
    environment, exactly as the driver does (:func:`optkit.runner.run_cell_payload`).
    """
    from optkit.registry import get_registry
    from optkit.runner import CellRunner, MemorySink, quiet
    from optkit.tasks import validate_task
    from optkit.tuning import TuningCell, cell_from_payload

    task = validate_task(payload["task"], payload["source"])
    cell = cell_from_payload(task, {"cell": payload["cell"]})
    if not isinstance(cell, TuningCell):
        raise OptkitError(f"{task.source}: '{payload['cell']}' is not a [tuning] search")
    sink = MemorySink()
    search = make_search(CellRunner(task, sink, get_registry(), quiet), cell)
    run_one(search, payload["overrides"], int(payload["trial"]))
    return sink.rows


__all__ = [
    "TRIAL_KEYS",
    "Search",
    "TrialJob",
    "make_search",
    "result_of_row",
    "run_batch",
    "run_one",
    "run_trial_payload",
    "trial_row",
]
