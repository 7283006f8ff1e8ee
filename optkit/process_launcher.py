"""The ``processes`` launcher: whole cells in parallel worker processes on this machine.

For a study on one many-core machine or one GPU shared by several cells, without a Ray
cluster: ``optkit bench TASK --jobs 4``. Each cell (or ``[tuning]`` trial) travels as the
plain payload the runner builds, runs in a spawned worker through the runner's own entry
(``optkit.runner.run_cell_payload``), and its rows come back to the driver as the cell
finishes, so the run directory, ``--resume`` and the manifest work as with ``local``.

Workers are *spawned*, not forked (CUDA cannot be used in a forked child), and load plugins
from their own environment, as Ray workers do: a component registered only in a private
:class:`~optkit.registry.Registry` is not visible to them.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, ClassVar

from optkit.errors import ConfigError, EnvironmentProblem
from optkit.interfaces import CellBatch, Launcher


def available_cpus() -> int:
    """CPUs this process may run on (its affinity where the platform tells, else all)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_threads(cpus: int, jobs: int) -> int:
    """Threads per worker: an explicit ``OMP_NUM_THREADS`` (a whole number >= 1) wins, else
    the CPUs shared out among the workers."""
    setting = os.environ.get("OMP_NUM_THREADS", "")
    if setting.isdigit() and int(setting) >= 1:
        return int(setting)
    return max(1, cpus // jobs)


def _start_worker(threads: int, pids: Any) -> None:
    """Worker initializer: ``threads`` intra-op threads per worker, so that ``jobs`` workers
    do not each start one thread per core; the worker's pid sent to the driver (``pids``, a
    queue), which ends its workers itself when the run stops; and an interrupt (Ctrl-C or
    ``timeout -s INT``, both sent to the whole process group) ignored here. Python's default
    handler would raise ``KeyboardInterrupt`` inside the cell, which the pool reports as that
    cell's result, and a worker killed by the signal would break the pool before the driver
    knows it is being interrupted (the searches of a ``[tuning]`` phase would record failed
    trials)."""
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    pids.put(os.getpid())


class ProcessLauncher(Launcher):
    """Runs up to ``jobs`` cells at once in spawned worker processes; rows stream back into the
    run directory in completion order, so an interrupted run loses only the cells running."""

    name: ClassVar[str] = "processes"
    summary: ClassVar[str] = "cells in parallel worker processes on this machine (--jobs N)"
    concurrent_batches: ClassVar[bool] = True
    """:meth:`launch` may be called from several threads at once (a ``[tuning]`` phase runs
    its searches side by side): every batch shares the one pool of ``jobs`` workers."""

    def __init__(self, *, jobs: int | None = None, threads_per_job: int | None = None) -> None:
        """Args:
        jobs: worker processes, the most cells running at once (default: the CPUs this
            process may use).
        threads_per_job: torch intra-op threads in each worker (default: ``OMP_NUM_THREADS``
            where it is set, else the CPUs divided by ``jobs``, at least 1).
        """
        cpus = available_cpus()
        for key, value in (("jobs", jobs), ("threads_per_job", threads_per_job)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(
                    f"launcher 'processes': {key} must be a whole number >= 1, got {value!r}"
                )
            if value is not None and value < 1:
                raise ConfigError(f"launcher 'processes': {key} must be >= 1, got {value}")
        self.jobs = jobs if jobs is not None else cpus
        self.threads_per_job = threads_per_job or default_threads(cpus, self.jobs)
        self._pool: ProcessPoolExecutor | None = None
        self._pids: Any = None
        self._closed = False
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the worker pool now (from the driver's main thread)."""
        self.pool()

    def pool(self) -> ProcessPoolExecutor:
        """The one pool of workers, started on first use."""
        import multiprocessing

        with self._lock:
            if self._closed:  # the run is stopping: a search thread must not start a pool
                raise KeyboardInterrupt("launcher 'processes' is closed")
            if self._pool is None:
                context = multiprocessing.get_context("spawn")
                self._pids = context.SimpleQueue()
                self._pool = ProcessPoolExecutor(
                    max_workers=self.jobs,
                    mp_context=context,
                    initializer=_start_worker,
                    initargs=(self.threads_per_job, self._pids),
                )
            return self._pool

    def launch(self, batch: CellBatch) -> None:
        """Submit every cell of ``batch``; deliver each one's rows as it finishes.

        Raises:
            EnvironmentProblem: a worker process died (killed, out of memory, a crash in
                native code); the cells delivered so far are kept, ``--resume`` runs the rest.
            KeyboardInterrupt: :meth:`close` ended the workers (the run was interrupted or
                failed elsewhere): nothing is recorded for the cells that were running.
        """
        pool = self.pool()
        pending: dict[Future[list[dict[str, Any]]], Any] = {}
        started = time.perf_counter()
        try:
            for cell in batch.cells:
                pending[pool.submit(batch.run_payload, batch.payload(cell))] = cell
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    cell = pending.pop(future)
                    try:
                        rows = future.result()
                    except BrokenProcessPool as exc:
                        if self._closed:
                            raise KeyboardInterrupt("launcher 'processes' closed") from exc
                        raise EnvironmentProblem(
                            f"launcher 'processes': a worker process died while running"
                            f" {cell.key} ({time.perf_counter() - started:.0f} s into the"
                            f" batch: killed, out of memory or a crash in native code); the"
                            " cells that finished are saved, `--resume` runs the rest"
                        ) from exc
                    batch.deliver(rows)
        finally:
            if pending:  # interrupted or failed: cells not started never start
                for future in pending:
                    future.cancel()

    def close(self) -> None:
        """End the workers, running cells included (the runner calls this when a run ends,
        finished or interrupted); the launcher cannot be used again."""
        import signal

        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is None:
            return
        pool.shutdown(wait=False, cancel_futures=True)
        while not self._pids.empty():
            pid = self._pids.get()
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:  # a worker that had already ended
                pass
