"""One cell (objective x optimizer x seed, or a hyperoptimizer cell): build it from the
registry with the cell's :class:`~optkit.context.RunContext`, run it, record its rows.

A cell that raises (a bug, a NaN loss) gets an ``error`` row and a failed ``end`` row; the
matrix goes on.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from optkit import environment
from optkit.context import RunContext, prepare_objective
from optkit.errors import DivergenceError, EnvironmentProblem, OptkitError
from optkit.interfaces import Executor, Objective, Optimizer
from optkit.progress import Progress
from optkit.registry import Registry
from optkit.runner.loop import run_loop
from optkit.runner.overrides import apply_dotted
from optkit.tasks import Cell, Task


class RowSink(Protocol):
    """Where a :class:`CellRunner` writes rows: a :class:`RunDirectory` or a memory list."""

    def append(self, rows: Iterable[dict[str, Any]]) -> None: ...


class MemorySink:
    """Collects rows in memory (cells run in a remote worker return them to the driver)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        self.rows.extend(rows)


class CellRunner:
    """Runs the cells of one task, writing rows to a sink (normally the run directory)."""

    def __init__(self, task: Task, run: RowSink, registry: Registry, progress: Progress) -> None:
        self.task = task
        self.run = run
        self.registry = registry
        self.progress = progress
        self.device = environment.resolve_device(task.device)
        self.dtype = environment.resolve_dtype(task.dtype)
        self.context = RunContext(self.device, self.dtype, registry)
        """The task's context; each cell runs with ``self.context.replace(seed=cell.seed)``."""

    def base_row(self, cell: Cell) -> dict[str, Any]:
        return {
            "task": self.task.name,
            "cell": cell.key,
            "objective": cell.objective.label,
            "optimizer": cell.optimizer.name,
            "label": cell.label,
            "hyperoptimizer": cell.hyperoptimizer.name if cell.hyperoptimizer else None,
            "seed": cell.seed,
            "phase": cell.phase,
        }

    def emit(self, cell: Cell, row: dict[str, Any]) -> None:
        self.run.append([{**self.base_row(cell), **row}])

    def build(self, cell: Cell) -> tuple[Objective, Optimizer, Executor]:
        context = self.context.replace(seed=cell.seed)
        objective = context.create("objective", cell.objective.spec(), cell.objective.where)
        prepare_objective(objective, context)
        optimizer = context.create("optimizer", cell.optimizer.spec(), cell.optimizer.where)
        executor = context.create("executor", self.task.executor.spec(), self.task.executor.where)
        executor.bind(objective)
        return objective, optimizer, executor

    def run_cell(self, cell: Cell, previous_rows: list[dict[str, Any]]) -> tuple[bool, str]:
        """Run one cell; returns (success, a short outcome). Errors are recorded, not raised."""
        started = time.perf_counter()
        status, error = "ok", None
        final: dict[str, Any] = {}
        executor: Executor | None = None
        try:
            if cell.phase == "tuning":  # a search of the [tuning] phase (optkit.tuning)
                from optkit.tuning import run_search

                final = run_search(self, cell, previous_rows)  # type: ignore[arg-type]
            elif cell.hyperoptimizer is None:
                objective, optimizer, executor = self.build(cell)
                final = run_loop(
                    objective,
                    optimizer,
                    executor,
                    cell.seed,
                    self.task.budget,
                    self.task.score,
                    on_eval=lambda row: self.emit(cell, {"event": "eval", **row}),
                    progress=self.progress,
                    what=cell.key,
                )
                final = {
                    **final,
                    "directions": objective.metric_direction(),
                    "primary_metric": objective.primary_metric,
                }
            else:
                # the hyperoptimizer builds its inner problems itself (no idle model copy)
                final = self.run_hyper_cell(cell, previous_rows)
        except EnvironmentProblem:
            raise  # the machine, not this cell: stop the run (finished cells are kept)
        except DivergenceError as exc:
            status, error = "diverged", str(exc)
        except OptkitError as exc:
            status, error = "failed", str(exc)
        except Exception as exc:  # a bug in a plugin must not stop the matrix
            status = "failed"
            error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}"
        finally:
            events = executor.diagnostics() if executor is not None else []
            if executor is not None:
                executor.close()
        if events:  # e.g. Ray actors restarted mid-run
            final = {**final, "executor_events": events}
        if error is not None:
            self.emit(cell, {"event": "error", "status": status, "error": error})
        self.emit(
            cell,
            {
                "event": "end",
                "status": status,
                "cell_wall_s": time.perf_counter() - started,
                **{k: v for k, v in final.items() if k not in ("event",)},
            },
        )
        if error is not None:
            return False, f"{status}: {error.splitlines()[0]}"
        if "best_score" in final:
            return True, f"best score {final['best_score']:.4g}"
        value = final.get(self.task.score)
        return True, f"{self.task.score} {value:.4g}" if isinstance(value, float) else "ok"

    def run_hyper_cell(self, cell: Cell, previous_rows: list[dict[str, Any]]) -> dict[str, Any]:
        """A hyperoptimizer cell (:func:`optkit.runner.hyper_cell.run_hyper_cell`)."""
        from optkit.runner.hyper_cell import run_hyper_cell

        return run_hyper_cell(self, cell, previous_rows)

    def create_inner(self, kind: str, cell: Cell, overrides: Mapping[str, Any]) -> Any:
        """Instantiate the cell's objective/optimizer with dotted ``kind.key`` overrides."""
        component = cell.objective if kind == "objective" else cell.optimizer
        spec = apply_dotted(component.spec(), kind, overrides)
        context = self.context.replace(seed=cell.seed)
        return context.create(kind, spec, f"{component.where} (trial overrides)")
