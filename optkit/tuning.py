"""The tuning phase of a task with ``[tuning]``: every optimizer tuned the same way, then measured.

For each objective and each method label of the task (those with a runnable measured cell), one
*search* (a :class:`TuningCell`, key ``objective|label|tuning``) runs the task's
hyperoptimizer over the optimizer's resolved space (:mod:`optkit.tuning_spec`). Every search
uses the same hyperoptimizer config, trial count, search seed (``tuning.seeds[0]``: random
search draws the same plan for every optimizer), tuning seeds and per-trial budget. A trial
trains the pairing once per tuning seed and is scored on the mean over those seeds of the final
``tuning.score`` (negated for a metric the objective maximises, so lower is better).

In a task with hyperoptimizer cells (``hyperoptimizer(s)`` as a matrix dimension: Flexora and
its baselines) the method label is ``hyperoptimizer:optimizer`` and a trial is one whole
hyperoptimizer cell (its own search and final fine-tune, say) run on each tuning seed with the
trial's optimizer (and objective) config and ``tuning.budget``, scored on the value of
``tuning.score`` in that cell's ``end`` row (:func:`optkit.runner.hyper_cell.reported_metrics`
gives the direction). The inner cell's own trace rows are not kept: a ``trial`` row carries the
numbers its end row reports, averaged over the tuning seeds.

Searches are cells: they go through :meth:`optkit.runner.CellRunner.run_cell` (under
``--launcher ray`` side by side in the driver, each trial a Ray task: :mod:`optkit.tuning_trials`,
:func:`optkit.runner.matrix.run_searches`), write rows with
``phase = "tuning"`` (``trial`` rows with ``trial`` and ``trial_config``; an ``end`` row with
``best_config``), and resume like hyperoptimizer cells (finished trials are kept). Once every
search has ended, the choices go to ``tuning.json`` and each measured cell runs with its
optimizer's chosen configuration (:class:`TunedCell`); the measured cells of an optimizer whose
search failed (every trial failed) are skipped with that reason.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from optkit.errors import OptkitError
from optkit.interfaces import TrialResult
from optkit.results import atomic_write_text
from optkit.tasks import Cell, Task
from optkit.tuning_spec import TuningSpec, plain_config, resolved_space

if TYPE_CHECKING:
    from optkit.registry import Registry
    from optkit.results import RunDirectory
    from optkit.runner import CellRunner, Progress, RunSummary

TUNING_FILE = "tuning.json"


@dataclass(frozen=True)
class TuningCell(Cell):
    """The search of one method's optimizer configuration on one objective; ``seed`` is the
    search's seed (``tuning.seeds[0]``); ``hyperoptimizer`` is set for a hyperoptimizer cell's
    label (its trials run that whole cell)."""

    phase: ClassVar[str] = "tuning"

    @property
    def key(self) -> str:
        return f"{self.objective.label}|{self.label}|tuning"


@dataclass(frozen=True)
class TunedCell(Cell):
    """A measured cell whose optimizer (and objective) specs carry the tuned overrides.

    Attributes:
        tuned: the dotted overrides applied (``{"optimizer.base_config.lr": 0.01}``), which
            travel with the cell to a remote worker (:func:`cell_payload`).
    """

    tuned: dict[str, Any] = field(default_factory=dict, compare=False)


def _tuning(task: Task) -> TuningSpec:
    if task.tuning is None:
        raise OptkitError(f"{task.source}: task '{task.name}' has no [tuning] section")
    return task.tuning


def tuning_cells(task: Task, runnable: Sequence[Cell]) -> list[TuningCell]:
    """One search per (objective, method label) with a runnable measured cell, in task order:
    per optimizer, or per (hyperoptimizer, optimizer) in a task with hyperoptimizer cells."""
    seed = _tuning(task).seeds[0]
    seen: dict[tuple[str, str], TuningCell] = {}
    for cell in runnable:
        key = (cell.objective.label, cell.label)
        if key not in seen:
            seen[key] = TuningCell(cell.objective, cell.optimizer, seed, cell.hyperoptimizer)
    return list(seen.values())


def tuned_cell(cell: Cell, overrides: Mapping[str, Any]) -> TunedCell:
    """``cell`` with the dotted ``objective.`` / ``optimizer.`` overrides applied to its specs."""
    from optkit.runner import apply_dotted

    def apply(spec: Any, kind: str) -> Any:
        full = apply_dotted(spec.spec(), kind, overrides)
        config = {k: v for k, v in full.items() if k != "name"}
        return dataclasses.replace(spec, config=config)

    return TunedCell(
        apply(cell.objective, "objective"),
        apply(cell.optimizer, "optimizer"),
        cell.seed,
        cell.hyperoptimizer,
        tuned=dict(overrides),
    )


def cell_payload(cell: Cell) -> dict[str, Any]:
    """What a remote worker needs besides the task and the key: the tuned overrides."""
    return {"tuned": dict(cell.tuned)} if isinstance(cell, TunedCell) else {}


def cell_from_payload(task: Task, payload: Mapping[str, Any]) -> Cell:
    """The cell a payload names: a measured cell (tuned when the payload says so) or a search."""
    key = payload["cell"]
    cells: list[Cell] = list(task.cells())
    if task.tuning is not None:
        cells += tuning_cells(task, task.cells())
    cell = next((c for c in cells if c.key == key), None)
    if cell is None:
        raise OptkitError(f"{task.source}: task '{task.name}' has no cell '{key}'")
    tuned = payload.get("tuned")
    return tuned_cell(cell, tuned) if tuned else cell


def _mean_metrics(finals: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    keys = set.intersection(*(set(f) for f in finals)) if finals else set()
    out = {}
    for key in sorted(keys):
        values = [f[key] for f in finals]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[key] = statistics.fmean(float(v) for v in values)
    return out


def run_search(runner: CellRunner, cell: TuningCell, previous_rows: list[dict[str, Any]]) -> dict:
    """Run one search (called by :meth:`CellRunner.run_cell`); returns its ``end`` row fields.

    The hyperoptimizer runs trials one at a time (``run_trial``) or in batches
    (``run_trials``); a batch goes to the run's launcher when ``runner`` is a
    :class:`~optkit.runner.trial_runner.TrialRunner` (``ray``: one Ray task per trial), else it is
    ``run_trial`` in a loop (:mod:`optkit.tuning_trials`). Trials of ``previous_rows`` (an
    interrupted run's) are handed over as ``completed``, in trial order, and not rerun.

    Raises:
        OptkitError: every trial failed (the measured cells of this optimizer are skipped).
    """
    from optkit.runner.hyper_cell import hyper_context
    from optkit.runner.trial_runner import TrialRunner
    from optkit.tuning_trials import make_search, result_of_row, run_batch, run_one

    task = runner.task
    tuning = _tuning(task)
    search = make_search(runner, cell)
    space = resolved_space(tuning, search.optimizer_cls)
    where = f"{task.source}: tuning.hyperoptimizer (optimizer '{cell.optimizer.label}')"
    hyper = runner.registry.create(
        "hyperoptimizer", {**tuning.hyperoptimizer.spec(), "space": space}, where
    )
    previous = sorted(
        (r for r in previous_rows if r.get("event") == "trial"),
        key=lambda r: int(r.get("trial") or 0),
    )
    used = {int(r.get("trial") or 0) for r in previous}
    # new trials take the indices an interrupted run left free, in order (a batch finishes
    # in any order, so trial 1 may be missing where trial 2 was kept), then the next ones
    free = (i for i in itertools.count() if i not in used)

    def run_trials(overrides: Sequence[Mapping[str, Any]]) -> list[TrialResult]:
        assert isinstance(runner, TrialRunner)
        indices = [next(free) for _ in overrides]
        return run_batch(search, runner.launcher, overrides, indices)

    def run_trial(overrides: Mapping[str, Any]) -> TrialResult:
        if isinstance(runner, TrialRunner):  # a batch of one: it runs where the others do
            return run_trials([overrides])[0]
        return run_one(search, overrides, next(free))

    completed = [result_of_row(r) for r in previous]
    batch = run_trials if isinstance(runner, TrialRunner) else None
    context = hyper_context(runner, cell, tuning.budget, run_trial, completed, batch)
    result = hyper.optimize(context)
    if not result.best_config or not math.isfinite(result.best_score):
        first = next((t.error for t in result.trials if t.error), "no trial ran")
        raise OptkitError(f"every one of the {len(result.trials)} trials failed (first: {first})")
    return {
        "best_config": plain_config(tuning, search.optimizer_cls, result.best_config),
        "best_overrides": dict(result.best_config),
        "best_score": result.best_score,
        "score_metric": tuning.score,
        "direction": search.direction,
        "trials": len(result.trials),
        "tuning_seeds": list(tuning.seeds),
        **{k: v for k, v in result.extras.items() if isinstance(v, (int, float, str))},
    }


class _Discard:
    """A row sink that keeps nothing (a tuning trial's inner hyperoptimizer cell)."""

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        pass


def _discarding_runner(task: Task, registry: Registry) -> CellRunner:
    """A :class:`CellRunner` whose rows go nowhere: it runs the inner hyperoptimizer cells of
    a search's trials, whose own trace rows the search does not keep."""
    from optkit.runner import CellRunner, quiet

    return CellRunner(task, _Discard(), registry, quiet)


def _hyper_trial(
    runner: CellRunner,
    search: TuningCell,
    overrides: Mapping[str, Any],
    seed: int,
    tuning: TuningSpec,
) -> dict[str, Any]:
    """One tuning seed of a hyperoptimizer-cell trial: the cell of ``search``'s label on
    ``seed``, its specs carrying ``overrides``, run with ``tuning.budget``; its end fields."""
    from optkit.runner.hyper_cell import run_hyper_cell

    plain = Cell(search.objective, search.optimizer, seed, search.hyperoptimizer)
    return run_hyper_cell(runner, tuned_cell(plain, overrides), [], tuning.budget)


def _hyper_score(end: Mapping[str, Any], metric: str, direction: str, search: Cell) -> float:
    """``end[metric]`` of an inner hyperoptimizer cell, negated for a metric to maximise.

    Raises:
        OptkitError: the cell did not report ``metric`` as a number (the trial fails).
    """
    value = end.get(metric)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        reported = sorted(k for k, v in end.items() if isinstance(v, (int, float)))
        raise OptkitError(
            f"tuning.score '{metric}' is not a number in the end row of the hyperoptimizer cell"
            f" '{search.label}' (got {value!r}); it reported: {', '.join(reported)}"
        )
    return -float(value) if direction == "max" else float(value)


@dataclass
class Choice:
    """The outcome of one search: the overrides to measure with, or why there are none."""

    overrides: dict[str, Any] | None
    record: dict[str, Any]
    reason: str = ""


def choices(task: Task, rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], Choice]:
    """(objective label, method label) -> :class:`Choice`, from the searches' rows (the
    method label is the optimizer's, or ``hyperoptimizer:optimizer`` for hyperoptimizer
    cells)."""
    tuning = _tuning(task)
    out: dict[tuple[str, str], Choice] = {}
    for search in tuning_cells(task, task.cells()):
        mine = [r for r in rows if r.get("cell") == search.key]
        ends = [r for r in mine if r.get("event") == "end"]
        if not ends:
            continue
        end = ends[-1]
        trials = [
            {
                "trial": r.get("trial"),
                "config": r.get("trial_config", {}),
                "score": r.get(tuning.score),
                "status": r.get("status", "ok" if r.get("error") is None else "failed"),
            }
            for r in sorted(  # trial order, whatever order a launcher finished them in
                (r for r in mine if r.get("event") == "trial"),
                key=lambda r: int(r.get("trial") or 0),
            )
        ]
        record: dict[str, Any] = {
            "optimizer": search.optimizer.label,
            "hyperoptimizer": search.hyperoptimizer.label if search.hyperoptimizer else None,
            "chosen": None,
            "resolved": None,
            "score": None,
            "score_metric": tuning.score,
            "direction": end.get("direction", "min"),
            "status": end.get("status"),
            "trials": trials,
        }
        key = (search.objective.label, search.label)
        if end.get("status") != "ok":
            reason = f"tuning failed: {str(end.get('error') or end.get('status'))[:200]}"
            out[key] = Choice(None, {**record, "error": reason}, reason)
            continue
        overrides = dict(end.get("best_overrides") or {})
        best = end.get("best_score")
        if best is not None and record["direction"] == "max":
            best = -best
        record.update(
            chosen=end.get("best_config"),
            resolved={k.removeprefix("optimizer."): v for k, v in overrides.items()},
            score=best,
        )
        out[key] = Choice(overrides, record)
    return out


def write_tuning_json(
    run: RunDirectory, task: Task, found: Mapping[tuple[str, str], Choice]
) -> None:
    """``tuning.json``: the choices per objective and label, and the protocol they came from."""
    tuning = _tuning(task)
    objectives: dict[str, dict[str, Any]] = {}
    for (objective, label), choice in found.items():
        objectives.setdefault(objective, {})[label] = choice.record
    payload = {
        "objectives": objectives,
        "hyperoptimizer": tuning.hyperoptimizer.spec(),
        "space": tuning.space,
        "score": tuning.score,
        "seeds": list(tuning.seeds),
        "budget": {"iterations": tuning.budget.iterations, "time_s": tuning.budget.time_s},
    }
    atomic_write_text(run.path / TUNING_FILE, json.dumps(payload, indent=2) + "\n")


def describe_plan(task: Task, runnable: Sequence[Cell]) -> str:
    """One line for ``optkit check``: what the tuning phase will run before the measured cells."""
    tuning = _tuning(task)
    searches = len(tuning_cells(task, runnable))
    trials = tuning.hyperoptimizer.config.get("trials")
    runs = (
        f" = {searches * trials * len(tuning.seeds)} trial runs" if isinstance(trials, int) else ""
    )
    if task.hyperoptimizers:
        return (
            f"tuning: {searches} searches (objective x hyperoptimizer x optimizer) x"
            f" {trials or 'default'} trials x {len(tuning.seeds)} seeds{runs}, each a whole"
            f" hyperoptimizer cell (budget {tuning.budget.iterations} iterations), with"
            f" {tuning.hyperoptimizer.name} on '{tuning.score}' (seeds {tuning.seeds}), before"
            f" the {len(runnable)} measured cells"
        )
    return (
        f"tuning: {searches} searches (objective x optimizer) x {trials or 'default'} trials x"
        f" {len(tuning.seeds)} seeds x {tuning.budget.iterations} iterations{runs}, with"
        f" {tuning.hyperoptimizer.name} on '{tuning.score}' (seeds {tuning.seeds}), before the"
        f" {len(runnable)} measured cells"
    )


def tuning_phase(
    task: Task,
    runnable: Sequence[Cell],
    todo: Sequence[Cell],
    done: set[str],
    run: RunDirectory,
    run_cells: Callable[[list[Cell]], None],
    summary: RunSummary,
    progress: Progress,
) -> list[Cell]:
    """Run the searches not yet ``done`` through ``run_cells`` (the runner's own cell loop or
    its Ray distribution), write ``tuning.json`` and return the measured cells of ``todo``
    with their optimizer's chosen configuration (the others are added to
    ``summary.cells_skipped``)."""
    tuning = _tuning(task)
    searches = tuning_cells(task, runnable)
    pending: list[Cell] = [c for c in searches if c.key not in done]
    trials = tuning.hyperoptimizer.config.get("trials", "?")
    progress(
        f"tuning: {len(searches)} searches ({len(pending)} to run) x {trials} trials x"
        f" {len(tuning.seeds)} seeds x {tuning.budget.iterations} iterations"
        f" ({tuning.hyperoptimizer.name} on '{tuning.score}')"
    )
    start = time.perf_counter()
    if pending:
        run_cells(pending)
    found = choices(task, run.rows())
    write_tuning_json(run, task, found)
    progress(f"tuning: done in {time.perf_counter() - start:.1f} s; choices in {TUNING_FILE}")
    measured: list[Cell] = []
    for cell in todo:
        choice = found.get((cell.objective.label, cell.label))
        if choice is None or choice.overrides is None:
            reason = choice.reason if choice is not None else "its tuning search did not end"
            summary.cells_skipped.append((cell.key, reason))
            progress(f"skip {cell.key}: {reason}")
            continue
        measured.append(tuned_cell(cell, choice.overrides))
    return measured


__all__ = [
    "TUNING_FILE",
    "Choice",
    "TunedCell",
    "TuningCell",
    "cell_from_payload",
    "cell_payload",
    "choices",
    "describe_plan",
    "run_search",
    "tuned_cell",
    "tuning_cells",
    "tuning_phase",
    "write_tuning_json",
]
