"""Run a task: each cell (objective x optimizer x seed) in turn, rows streamed to the run dir.

One cell::

    context = RunContext(device, dtype, registry, seed)   # optkit.context
    objective = context.create("objective", spec); prepare_objective(objective, context)
    generator = torch.Generator().manual_seed(seed)
    params = objective.init_params(generator); state = optimizer.init(params)
    oracle = Oracle(objective, executor, generator)
    row at iteration 0, then every eval_every iterations: objective.evaluate(params) + counters

``wall_s`` counts optimization time only (``optimizer.step`` calls, GPU synchronized), not the
time spent evaluating metrics. A cell that raises (a bug, a NaN loss) gets an ``error`` row and
a failed ``end`` row; the matrix goes on.

One module per job:

* :mod:`optkit.runner.matrix`: :func:`run_task` (check, lock, launch the cells, manifest);
* :mod:`optkit.runner.cell`: :class:`CellRunner`, one cell and its rows;
* :mod:`optkit.runner.hyper_cell`: a hyperoptimizer cell and its trials;
* :mod:`optkit.runner.loop`: :func:`run_loop`, one optimization within a budget;
* :mod:`optkit.runner.overrides`: :func:`apply_dotted`, dotted-key overrides;
* :mod:`optkit.runner.manifest`: ``manifest.json``.
"""

from __future__ import annotations

from optkit.progress import Progress
from optkit.runner.cell import CellRunner, MemorySink, RowSink
from optkit.runner.loop import quiet, run_loop, score_of, stderr_progress
from optkit.runner.manifest import default_out, manifest_for
from optkit.runner.matrix import RunSummary, cell_batch, make_launcher, run_cell_payload, run_task
from optkit.runner.overrides import apply_dotted

__all__ = [
    "CellRunner",
    "MemorySink",
    "Progress",
    "RowSink",
    "RunSummary",
    "apply_dotted",
    "cell_batch",
    "default_out",
    "make_launcher",
    "manifest_for",
    "quiet",
    "run_cell_payload",
    "run_loop",
    "run_task",
    "score_of",
    "stderr_progress",
]
