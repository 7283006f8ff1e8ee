"""The ``ray`` launcher: whole cells as Ray tasks (``optkit bench TASK --launcher ray``), and
a ``[tuning]`` phase's trials as one Ray task each (:mod:`optkit.tuning_trials`).

The runner keeps the results file, resume and the manifest; this launcher only decides where
the cells run. Each cell travels as the plain payload the runner builds, runs in a Ray worker
through the runner's own module-level entry (``optkit.runner.run_cell_payload``), and its rows
come back to the driver as the cell finishes (:func:`optkit_ray.cells.run_cells_on_ray`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from optkit.errors import ConfigError
from optkit.interfaces import CellBatch, Launcher, Requirement


class RayLauncher(Launcher):
    """Distributes whole cells to a Ray cluster (a local one by default); rows stream back
    into the run directory in completion order, so ``--resume`` works as with ``local``."""

    name: ClassVar[str] = "ray"
    summary: ClassVar[str] = "cells as Ray tasks on a cluster (rows streamed back as cells end)"
    requires: ClassVar[tuple[Requirement, ...]] = (Requirement("ray", "ray"),)
    test_marks: ClassVar[tuple[str, ...]] = ("ray",)
    concurrent_batches: ClassVar[bool] = True
    """:meth:`launch` may be called from several threads at once, each batch's cells running
    in parallel: a ``[tuning]`` phase runs its searches side by side in the driver, each
    search's batches of trials as Ray tasks (one per trial, ``num_cpus_per_cell`` each)."""

    def __init__(
        self,
        *,
        address: str | None = None,
        num_cpus_per_cell: float = 1.0,
        num_gpus_per_cell: float = 0.0,
        max_in_flight: int | None = None,
    ) -> None:
        """Args:
        address: ``None``: this process's Ray connection or a new local instance; ``"auto"``:
            the cluster started with ``ray start`` here; ``"host:port"``: that cluster.
        num_cpus_per_cell / num_gpus_per_cell: resources each cell reserves (fractional
            allowed: 0.25 GPUs runs four cells on one GPU).
        max_in_flight: at most this many cells submitted at once (``None``: all); for the
            trials of a ``[tuning]`` phase, per search (the searches run side by side).
        """
        if num_cpus_per_cell < 0 or num_gpus_per_cell < 0:
            raise ConfigError(
                "launcher 'ray': num_cpus_per_cell and num_gpus_per_cell must be >= 0"
            )
        if max_in_flight is not None and max_in_flight < 1:
            raise ConfigError(f"launcher 'ray': max_in_flight must be >= 1, got {max_in_flight}")
        self.address = address
        self.num_cpus_per_cell = num_cpus_per_cell
        self.num_gpus_per_cell = num_gpus_per_cell
        self.max_in_flight = max_in_flight

    def start(self) -> None:
        """Connect to Ray now (from the calling thread: the driver's main thread, before the
        ``[tuning]`` searches start launching from threads of their own)."""
        from optkit_ray.connect import connect

        connect(self.address)

    def launch(self, batch: CellBatch) -> None:
        from optkit_ray.cells import run_cells_on_ray

        run_cells_on_ray(
            [(batch.run_payload, batch.payload(cell)) for cell in batch.cells],
            run_tagged,
            batch.deliver,
            address=self.address,
            num_cpus_per_cell=self.num_cpus_per_cell,
            num_gpus_per_cell=self.num_gpus_per_cell,
            max_in_flight=self.max_in_flight,
        )


def run_tagged(
    job: tuple[Callable[[dict[str, Any]], list[dict[str, Any]]], dict[str, Any]],
) -> list[dict[str, Any]]:
    """``run_payload(payload)`` for ``job = (run_payload, payload)``, inside a Ray task, each
    row tagged with where it ran: ``ray_task`` (the task's id, one per cell or trial) and
    ``ray_node`` (the node's id)."""
    import ray

    run_payload, payload = job
    rows = run_payload(payload)
    context = ray.get_runtime_context()
    where = {"ray_task": context.get_task_id(), "ray_node": context.get_node_id()}
    return [{**row, **where} for row in rows]
