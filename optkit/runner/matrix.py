"""A task run: check the task, lock the run directory, launch the missing cells where the
chosen launcher runs them, write the manifest. Rows stream into the run directory as cells
run, so ``resume`` finishes an interrupted run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from optkit.checking import CheckReport, check_task
from optkit.errors import ConfigError, EnvironmentProblem
from optkit.interfaces import CellBatch, Launcher
from optkit.progress import Progress
from optkit.registry import Registry, get_registry
from optkit.results import RunDirectory
from optkit.runner.cell import CellRunner, MemorySink
from optkit.runner.loop import quiet, stderr_progress
from optkit.runner.manifest import default_out, manifest_for
from optkit.runner.trial_runner import TrialRunner
from optkit.tasks import Cell, Task
from optkit.wording import CLI, Words


@dataclass
class RunSummary:
    """What :func:`run_task` returns."""

    out: Path
    cells_run: int = 0
    cells_failed: list[str] = field(default_factory=list)
    cells_skipped: list[tuple[str, str]] = field(default_factory=list)
    cells_resumed: int = 0
    wall_s: float = 0.0


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
    the other in this process; ``"processes"``: in parallel worker processes on this machine;
    ``"ray"``: as Ray tasks, from the ``optkit_ray`` plugin), or a spec such as
    ``{"name": "processes", "jobs": 4}`` or ``{"name": "ray", "address": "auto"}``. Rows reach
    ``out`` as each cell finishes, so ``resume`` works the same way wherever cells run.
    ``cells_on`` (a launcher name) and ``ray_address`` (the launcher's ``address``) are the
    older spellings.

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
        chosen.close()  # a launcher's workers (``processes``) end with the run
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
    spec: dict[str, Any] = {"name": launcher} if isinstance(launcher, str) else dict(launcher)
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
    runner = TrialRunner(task, run, registry, progress, launcher)
    todo = [c for c in report.runnable if c.key not in done]
    summary.cells_resumed = len(report.runnable) - len(todo)
    if summary.cells_resumed:
        progress(f"resume: {summary.cells_resumed} cells already done, {len(todo)} to run")
    t0 = time.perf_counter()

    def run_cells(cells: list[Cell]) -> None:
        launcher.launch(cell_batch(task, cells, kept, runner, run, summary, progress))

    def searches(cells: list[Cell]) -> None:
        if getattr(launcher, "concurrent_batches", False):  # trials spread, searches in threads
            run_searches(cells, kept, runner, summary, progress)
        else:
            run_cells(cells)

    if task.tuning is not None:  # the searches run as cells first; measured cells take choices
        from optkit.tuning import tuning_phase

        todo = tuning_phase(task, report.runnable, todo, done, run, searches, summary, progress)
    run_cells(todo)
    summary.wall_s = time.perf_counter() - t0
    run.export_csv()
    run.write_manifest(manifest_for(task, "complete", started, summary))
    return summary


def run_searches(
    cells: list[Cell],
    kept: list[dict[str, Any]],
    runner: TrialRunner,
    summary: RunSummary,
    progress: Progress,
) -> None:
    """Run the ``[tuning]`` searches ``cells`` side by side in this process, one thread each,
    under a launcher that runs batches in parallel (``concurrent_batches``: ``ray``).

    A search is cheap here (its hyperoptimizer proposes, a BoTorch GP is fitted); its trials
    go to the launcher in batches (:mod:`optkit.tuning_trials`), so every search's trials are
    in flight at once: 4 optimizers x 12 random-search trials are 48 Ray tasks. Rows reach the
    run directory (under the runner's lock) as each trial and search ends.

    The threads are daemons: an interrupt (Ctrl-C) ends the run at once, every finished trial
    already written, and ``--resume`` goes on from there.

    Raises:
        EnvironmentProblem: from any search (the others finish first).
    """
    import threading

    start = getattr(runner.launcher, "start", None)
    if callable(start):  # connect from this (the main) thread, e.g. ray.init
        start()
    problems: list[BaseException] = []

    def one(number: int, cell: Cell) -> None:
        began = time.perf_counter()
        progress(f"[{number}/{len(cells)}] {cell.key}: started")
        previous = [r for r in kept if r.get("cell") == cell.key]
        try:
            ok, outcome = runner.run_cell(cell, previous)
        except BaseException as exc:  # EnvironmentProblem: raised in the calling thread
            problems.append(exc)
            return
        with runner.lock:
            summary.cells_run += 1
            if not ok:
                summary.cells_failed.append(cell.key)
        seconds = time.perf_counter() - began
        progress(f"[{number}/{len(cells)}] {cell.key}: {outcome} ({seconds:.1f} s)")

    threads = [
        threading.Thread(target=one, args=(n, c), name=f"search-{n}", daemon=True)
        for n, c in enumerate(cells, 1)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():  # a timeout, so that Ctrl-C reaches this thread
            thread.join(timeout=0.5)
    if problems:
        raise problems[0]


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
