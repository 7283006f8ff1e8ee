"""Whole benchmark cells as Ray tasks, with rows streamed back to the driver as cells finish.

The runner keeps the results file and ``--resume``: it passes only the cells not yet done, and
:func:`run_cells_on_ray` calls ``on_result(rows)`` in the driver process for each cell the
moment it finishes (a ``ray.wait`` loop), so rows reach the results file in completion order
and an interrupted bench loses only the cells still running.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from optkit.errors import ConfigError

Rows = list[dict[str, Any]]


def run_cells_on_ray(
    cells: Sequence[Any],
    run_cell_fn: Callable[[Any], Rows],
    on_result: Callable[[Rows], None],
    *,
    address: str | None = None,
    num_cpus_per_cell: float = 1.0,
    num_gpus_per_cell: float = 0.0,
    max_in_flight: int | None = None,
    max_retries: int = 3,
    on_error: Callable[[Any, BaseException], None] | None = None,
    connect_timeout_s: float = 10.0,
) -> int:
    """Run ``run_cell_fn(cell)`` for every cell as a Ray task; stream the rows back.

    Args:
        cells: picklable cell descriptions (plain dicts / dataclasses).
        run_cell_fn: a module-level (importable, picklable) function ``cell -> rows`` that runs
            one whole cell in a Ray worker and returns its results rows.
        on_result: called in the driver with each finished cell's rows, in completion order.
        address: as the ``ray`` executor's ``address`` (``None``: this process's connection
            or a new local instance; ``"auto"``; ``"host:port"``).
        num_cpus_per_cell / num_gpus_per_cell: resources each task reserves (fractional GPUs
            allowed: 0.25 runs four cells on one GPU).
        max_in_flight: at most this many cells submitted at once (``None``: all).
        max_retries: how many times Ray re-runs a cell whose worker process died.
        on_error: called with ``(cell, exception)`` when a cell raises, then the other cells go
            on; ``None``: the first failure cancels the cells still running and is raised.
        connect_timeout_s: TCP probe timeout for an explicit ``address``.

    Returns:
        The number of cells whose rows were delivered.

    Raises:
        ConfigError: bad arguments or an unreachable address.
        Exception: the first cell's error when ``on_error`` is ``None`` (a ``RayTaskError``
            that is also an instance of the cell's own exception class).
    """
    if max_in_flight is not None and max_in_flight < 1:
        raise ConfigError(f"run_cells_on_ray: max_in_flight must be >= 1, got {max_in_flight}")
    if num_cpus_per_cell < 0 or num_gpus_per_cell < 0:
        raise ConfigError("run_cells_on_ray: num_cpus_per_cell / num_gpus_per_cell must be >= 0")
    from optkit_ray.connect import connect

    ray = connect(address, connect_timeout_s=connect_timeout_s)
    remote = ray.remote(run_cell_fn).options(
        num_cpus=num_cpus_per_cell, num_gpus=num_gpus_per_cell, max_retries=max_retries
    )
    todo = list(enumerate(cells))
    todo.reverse()  # pop() from the end submits in the given order
    limit = max_in_flight or max(1, len(todo))
    in_flight: dict[Any, int] = {}
    delivered = 0
    try:
        while todo or in_flight:
            while todo and len(in_flight) < limit:
                index, cell = todo.pop()
                in_flight[remote.remote(cell)] = index
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            index = in_flight.pop(ready[0])
            try:
                rows = ray.get(ready[0])
            except Exception as exc:
                if on_error is None:
                    raise
                on_error(cells[index], _cause(exc))
                continue
            on_result(rows)
            delivered += 1
    finally:
        # Interrupted or failed: stop what is still running. Only tasks not yet finished are
        # cancelled: force-cancelling a task as it completes can trip a fatal check in Ray's
        # task manager ("Tried to complete task that was not pending", seen once in a CI run
        # with ray 2.60), which aborts the driver process.
        running = list(in_flight)
        if running:
            _, running = ray.wait(running, num_returns=len(running), timeout=0)
        for ref in running:
            # force: a plain cancel raises KeyboardInterrupt inside the task, which can land in
            # the middle of an import (torch's lazy `torch._dynamo`, seen under load) and leave
            # the reused worker with a half-initialized module that breaks every later cell.
            # Killing the worker costs a process start, and only on this failure path.
            ray.cancel(ref, force=True)
    return delivered


def _cause(exc: BaseException) -> BaseException:
    """The cell's own exception inside Ray's ``RayTaskError`` wrapper, when there is one."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc
