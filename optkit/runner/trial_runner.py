"""A :class:`CellRunner` that knows the run's launcher, for the ``[tuning]`` phase's batches of
trials (:mod:`optkit.tuning_trials`), and writes rows under a lock so that several searches
can run at once in threads of the driver (:func:`optkit.runner.matrix.run_searches`)."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from optkit.interfaces import Launcher
from optkit.progress import Progress
from optkit.registry import Registry
from optkit.runner.cell import CellRunner, RowSink
from optkit.tasks import Cell, Task


class TrialRunner(CellRunner):
    """A :class:`CellRunner` whose ``[tuning]`` searches hand batches of trials to
    ``launcher`` (``HyperContext.run_trials``); its rows are written under ``lock``."""

    def __init__(
        self,
        task: Task,
        run: RowSink,
        registry: Registry,
        progress: Progress,
        launcher: Launcher,
    ) -> None:
        super().__init__(task, run, registry, progress)
        self.launcher = launcher
        self.lock = threading.RLock()

    def emit(self, cell: Cell, row: dict[str, Any]) -> None:
        with self.lock:
            super().emit(cell, row)

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        """Write rows made elsewhere (a remote trial's, base fields included)."""
        with self.lock:
            self.run.append(rows)
