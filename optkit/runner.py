"""Run a task: each cell (objective x optimizer x seed) in turn, rows streamed to the run dir.

One cell::

    objective.prepare(device, dtype); generator = torch.Generator().manual_seed(seed)
    params = objective.init_params(generator); state = optimizer.init(params)
    oracle = Oracle(objective, executor, generator)
    row at iteration 0, then every eval_every iterations: objective.evaluate(params) + counters

``wall_s`` counts optimization time only (``optimizer.step`` calls, GPU synchronized), not the
time spent evaluating metrics. A cell that raises (a bug, a NaN loss) gets an ``error`` row and
a failed ``end`` row; the matrix goes on.
"""

from __future__ import annotations

import copy
import math
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import torch

from optkit import environment
from optkit.context import RunContext, prepare_objective
from optkit.errors import ConfigError, DivergenceError, EnvironmentProblem, OptkitError
from optkit.interfaces import (
    CellBatch,
    Executor,
    HyperContext,
    HyperOptimizer,
    Launcher,
    Objective,
    Optimizer,
    TrialResult,
)
from optkit.oracle import Oracle
from optkit.progress import Progress
from optkit.registry import Registry, get_registry
from optkit.results import RunDirectory
from optkit.tasks import Budget, Cell, CheckReport, Task, check_task
from optkit.wording import CLI, Words


def stderr_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def quiet(message: str) -> None:
    return None


@dataclass
class RunSummary:
    """What :func:`run_task` returns."""

    out: Path
    cells_run: int = 0
    cells_failed: list[str] = field(default_factory=list)
    cells_skipped: list[tuple[str, str]] = field(default_factory=list)
    cells_resumed: int = 0
    wall_s: float = 0.0


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
    oracle = Oracle(objective, executor, generator)
    wall = 0.0
    minibatch_loss = float("nan")
    last_report = time.perf_counter()

    def evaluation(iteration: int, extras: dict[str, float]) -> dict[str, Any]:
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
        minibatch_loss = info.loss
        if math.isinf(minibatch_loss):
            raise DivergenceError(f"minibatch loss {minibatch_loss} at iteration {iteration}")
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
        assert cell.hyperoptimizer is not None
        spec = cell.hyperoptimizer
        cell_context = self.context.replace(seed=cell.seed)
        hyper: HyperOptimizer = cell_context.create("hyperoptimizer", spec.spec(), spec.where)
        trial_counter = [len([r for r in previous_rows if r.get("event") == "trial"])]

        def run_trial(overrides: Mapping[str, Any]) -> TrialResult:
            start = time.perf_counter()
            index = trial_counter[0]
            trial_counter[0] += 1
            try:
                context = self.context.replace(seed=cell.seed)
                inner_objective = self.create_inner("objective", cell, overrides)
                prepare_objective(inner_objective, context)
                inner_optimizer = self.create_inner("optimizer", cell, overrides)
                executor = context.create(
                    "executor", self.task.executor.spec(), self.task.executor.where
                )
                executor.bind(inner_objective)
                try:
                    final = run_loop(
                        inner_objective,
                        inner_optimizer,
                        executor,
                        cell.seed,
                        self.task.budget,
                        self.task.score,
                    )
                finally:
                    executor.close()
                metrics = {k: v for k, v in final.items() if isinstance(v, (int, float))}
                result = TrialResult(
                    dict(overrides),
                    score_of(final, inner_objective, self.task.score),
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
            self.emit(
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
        context = HyperContext(
            objective_spec=cell.objective.spec(),
            optimizer_spec=cell.optimizer.spec(),
            budget=dict(vars(self.task.budget)),
            seed=cell.seed,
            generator=torch.Generator().manual_seed(cell.seed),
            run_trial=run_trial,
            create_objective=lambda o: self.create_inner("objective", cell, o),
            create_optimizer=lambda o: self.create_inner("optimizer", cell, o),
            record=lambda row: self.emit(cell, {"event": "trace", **row}),
            completed=completed,
            device=self.device,
            dtype=self.dtype,
            run_context=cell_context,
        )
        result = hyper.optimize(context)
        return {
            "best_config": result.best_config,
            "best_score": result.best_score,
            "trials": len(result.trials),
            **{k: v for k, v in result.extras.items() if _json_plain(v)},
        }

    def create_inner(self, kind: str, cell: Cell, overrides: Mapping[str, Any]) -> Any:
        """Instantiate the cell's objective/optimizer with dotted ``kind.key`` overrides."""
        component = cell.objective if kind == "objective" else cell.optimizer
        spec = apply_dotted(component.spec(), kind, overrides)
        context = self.context.replace(seed=cell.seed)
        return context.create(kind, spec, f"{component.where} (trial overrides)")


def _json_plain(value: Any) -> bool:
    """Numbers, strings, and lists/dicts of them: what an ``end`` row can carry as is."""
    if isinstance(value, (int, float, str, bool)) or value is None:
        return True
    if isinstance(value, (list, tuple)):
        return all(_json_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_plain(v) for k, v in value.items())
    return False


def apply_dotted(spec: dict[str, Any], kind: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Apply overrides such as ``{"optimizer.lr": 0.1, "optimizer.betas.0": 0.8}`` to ``spec``
    for keys that start with ``kind.``; list indices are integers."""
    spec = copy.deepcopy(spec)
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if head != kind:
            continue
        if not rest:
            raise ConfigError(f"override '{key}': expected '{kind}.<key>'")
        parts = rest.split(".")
        node: Any = spec
        for part in parts[:-1]:
            if isinstance(node, list):
                node = node[int(part)]
            else:
                node = node.setdefault(part, {})
        if isinstance(node, list):
            node[int(parts[-1])] = value
        else:
            node[parts[-1]] = value
    return spec


def manifest_for(
    task: Task, status: str, started: str, summary: RunSummary | None
) -> dict[str, Any]:
    source_dir = Path(task.source).parent if Path(task.source).exists() else Path.cwd()
    manifest: dict[str, Any] = {
        "task_name": task.name,
        "fingerprint": task.fingerprint,
        "source": task.source,
        "task": task.raw,
        "resolved": {
            "seeds": task.seeds,
            "budget": vars(task.budget),
            "device": task.device,
            "dtype": task.dtype,
            "score": task.score,
            "objectives": [vars(s) for s in task.objectives],
            "optimizers": [vars(s) for s in task.optimizers],
            "executor": vars(task.executor),
            "hyperoptimizers": [vars(h) for h in task.hyperoptimizers],
        },
        "versions": environment.package_versions(),
        "git_revision": environment.git_revision(source_dir),
        "hardware": environment.hardware(),
        "started": started,
        "status": status,
    }
    if summary is not None:
        manifest.update(
            finished=datetime.now(UTC).isoformat(timespec="seconds"),
            cells_run=summary.cells_run,
            cells_failed=summary.cells_failed,
            cells_skipped=[{"cell": c, "reason": r} for c, r in summary.cells_skipped],
            wall_s=summary.wall_s,
        )
    return manifest


def default_out(task: Task) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{task.name}-{stamp}"


def run_task(
    task: Task,
    out: str | Path | None = None,
    *,
    resume: bool = False,
    registry: Registry | None = None,
    progress: Progress = stderr_progress,
    launcher: str | Mapping[str, Any] = "local",
    cells_on: str | None = None,
    ray_address: str | None = None,
    words: Words = CLI,
) -> RunSummary:
    """Check the task, then run every missing cell into ``out``.

    ``launcher`` names where whole cells run: a registered launcher (``"local"``: one after
    the other in this process; ``"ray"``: as Ray tasks, from the ``optkit_ray`` plugin), or a
    spec such as ``{"name": "ray", "address": "auto"}``. Rows reach ``out`` as each cell
    finishes, so ``resume`` works the same way wherever cells run. ``cells_on`` (a launcher
    name) and ``ray_address`` (the launcher's ``address``) are the older spellings.

    Everything that can be wrong with the input (unknown plugins or launcher, bad config, no
    runnable cell, a launcher whose package is missing, ``resume`` without ``out``, an ``out``
    directory holding something else or being written by another process) raises before
    anything is written. ``words`` names the caller's flags in those messages (the CLI's
    ``--out`` or the API's ``out=``).

    The run directory is locked while this runs (:mod:`optkit.runlock`).
    """
    if resume and out is None:
        raise ConfigError(
            f"{words.resume} finishes the missing cells of an existing run directory: name it"
            f" with {words.out} (without {words.out}, a run writes a new timestamped directory)."
        )
    registry = registry or get_registry()
    report = check_task(task, registry)
    chosen = make_launcher(registry, launcher, cells_on, ray_address)
    out_path = Path(out) if out is not None else default_out(task)
    run = RunDirectory.create(out_path, task.name, task.fingerprint, resume, words)
    try:
        if run.lock is not None and run.lock.note:
            print(f"optkit: note: {run.lock.note}", file=sys.stderr, flush=True)
        return _run_locked(task, run, report, resume, registry, progress, chosen)
    finally:
        run.close()


def make_launcher(
    registry: Registry,
    launcher: str | Mapping[str, Any],
    cells_on: str | None = None,
    address: str | None = None,
) -> Launcher:
    """The launcher ``launcher`` names (a name or a ``{"name": ..., **config}`` spec), built
    from ``registry``; ``cells_on`` and ``address`` are the older ``cells_on=`` / ``ray_address=``
    spellings of its name and its ``address``.

    Raises:
        PluginError: no launcher of that name (the registered ones listed).
        ConfigError: a bad config for it.
        EnvironmentProblem: it needs a package that is not installed (naming the extra).
    """
    spec: dict[str, Any] = (
        {"name": launcher} if isinstance(launcher, str) else dict(launcher)
    )
    if cells_on is not None:
        spec["name"] = cells_on
    if address is not None:
        spec["address"] = address
    where = f"launcher '{spec.get('name')}'"
    cls = registry.get("launcher", str(spec.get("name")))
    for requirement in cls.missing_requirements():
        raise EnvironmentProblem(requirement.missing_reason(where))
    chosen: Launcher = registry.create("launcher", spec, where)
    return chosen


def _run_locked(
    task: Task,
    run: RunDirectory,
    report: CheckReport,
    resume: bool,
    registry: Registry,
    progress: Progress,
    launcher: Launcher,
) -> RunSummary:
    """The body of :func:`run_task` once the run directory is checked and locked."""
    out_path = run.path
    summary = RunSummary(out=out_path)
    summary.cells_skipped = [(c.key, reason) for c, reason in report.skipped]
    for cell, reason in report.skipped:
        progress(f"skip {cell.key}: {reason}")
    kept = run.prepare_resume() if resume else []
    done = {r["cell"] for r in kept if r.get("event") == "end"}
    started = datetime.now(UTC).isoformat(timespec="seconds")
    if resume and run.manifest_path.exists():
        started = run.manifest().get("started", started)
    run.write_manifest(manifest_for(task, "running", started, None))
    runner = CellRunner(task, run, registry, progress)
    todo = [c for c in report.runnable if c.key not in done]
    summary.cells_resumed = len(report.runnable) - len(todo)
    if summary.cells_resumed:
        progress(f"resume: {summary.cells_resumed} cells already done, {len(todo)} to run")
    t0 = time.perf_counter()

    def run_cells(cells: list[Cell]) -> None:
        launcher.launch(cell_batch(task, cells, kept, runner, run, summary, progress))

    if task.tuning is not None:  # the searches run as cells first; measured cells take choices
        from optkit.tuning import tuning_phase

        todo = tuning_phase(task, report.runnable, todo, done, run, run_cells, summary, progress)
    run_cells(todo)
    summary.wall_s = time.perf_counter() - t0
    run.export_csv()
    run.write_manifest(manifest_for(task, "complete", started, summary))
    return summary


def cell_batch(
    task: Task,
    cells: list[Cell],
    kept: list[dict[str, Any]],
    runner: CellRunner,
    run: RunDirectory,
    summary: RunSummary,
    progress: Progress,
) -> CellBatch:
    """What a launcher gets for ``cells``: run one here (rows streamed into ``run``), or its
    payload and :func:`run_cell_payload` to run elsewhere, rows then handed to ``deliver``."""
    before = summary.cells_run  # a tuned task launches twice: searches, then measured cells

    def previous(cell_key: str) -> list[dict[str, Any]]:
        return [r for r in kept if r.get("cell") == cell_key]

    def run_here(cell: Cell) -> tuple[bool, str]:
        ok, outcome = runner.run_cell(cell, previous(cell.key))
        summary.cells_run += 1
        if not ok:
            summary.cells_failed.append(cell.key)
        return ok, outcome

    def payload(cell: Cell) -> dict[str, Any]:
        from optkit.tuning import cell_payload

        return {
            "task": task.raw,
            "source": task.source,
            "cell": cell.key,
            "previous": previous(cell.key),
            **cell_payload(cell),
        }

    def deliver(rows: list[dict[str, Any]]) -> None:
        run.append(rows)
        end = rows[-1] if rows else {}
        summary.cells_run += 1
        if end.get("status") != "ok":
            summary.cells_failed.append(str(end.get("cell")))
        number = summary.cells_run - before
        progress(f"[{number}/{len(cells)}] {end.get('cell')}: {end.get('status')}")

    return CellBatch(cells, run_here, payload, run_cell_payload, deliver, progress)


def run_cell_payload(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Run one cell described by plain data and return its rows (the Ray worker's entry).

    ``payload``: ``{"task": raw task dict, "source": str, "cell": key, "previous": rows}``.
    The worker loads plugins from its own environment, exactly as the driver does.
    """
    from optkit.tasks import validate_task
    from optkit.tuning import cell_from_payload

    task = validate_task(payload["task"], payload["source"])
    cell = cell_from_payload(task, payload)  # a measured cell (tuned or not) or a search
    sink = MemorySink()
    CellRunner(task, sink, get_registry(), quiet).run_cell(cell, payload["previous"])
    return sink.rows
