"""The Python API, mirroring the command line.

import optkit
task = optkit.load_task("tasks/quickstart.toml", overrides=["budget.iterations=10"])
summary = optkit.run(task, out="runs/quick")
rows = optkit.load_rows(summary.out)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from optkit.registry import Registry
from optkit.results import load_rows
from optkit.runner import Progress, RunSummary, quiet, run_task, stderr_progress
from optkit.tasks import Task, load_task
from optkit.wording import API


def run(
    task: Task | str | Path | Mapping[str, Any],
    out: str | Path | None = None,
    *,
    overrides: Iterable[str] = (),
    resume: bool = False,
    registry: Registry | None = None,
    progress: Progress | bool = False,
) -> RunSummary:
    """Run a task (a :class:`Task`, a TOML path or a dict) into ``out``; see ``optkit run``.

    ``progress=True`` prints per-cell progress to stderr (the CLI does); a callable receives
    the messages. ``resume=True`` needs ``out`` (the directory to finish). Errors name these
    keywords (``out=``, ``resume=True``), not the command line's flags.

    Raises:
        OptkitError: the task or ``out`` is wrong, another process writes ``out`` (its
            :class:`~optkit.errors.ResultsError` names it), or the machine stops the run
            (:class:`~optkit.errors.EnvironmentProblem`: a full disk, a missing package).
    """
    if not isinstance(task, Task):
        task = load_task(task, overrides)
    elif overrides:
        raise TypeError("overrides apply when loading; pass a path or dict, not a Task")
    sink: Progress = (
        stderr_progress if progress is True else quiet if progress is False else progress
    )
    return run_task(task, out, resume=resume, registry=registry, progress=sink, words=API)


__all__ = ["load_rows", "load_task", "run"]
