"""``optkit diagnose noise TASK.toml``: each objective's gradient noise scale at the start and
the middle of training, beside the task's batch size.

For every objective of the task (seed: the task's first seed):

1. *start*: at the initial parameters, ``|G_b|^2`` of ``draws`` minibatches at each of several
   batch sizes (default ``b/4, b, 4b`` for the objective's batch size ``b``), then
   :func:`~optkit.diagnose.noise_scale.fit_noise_scale`;
2. *middle*: the same after half the task's budget (``budget.iterations // 2`` iterations)
   of the task's first optimizer, run with the task's executor as ``optkit run`` would.

The objective must implement :class:`optkit.interfaces.SizedBatches`; one that does not is
reported by name and skipped (an error when no objective of the task can be measured).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from optkit import environment
from optkit.diagnose.gradients import minibatch_sq_norms
from optkit.diagnose.noise_scale import NoiseScale, fit_noise_scale, reading
from optkit.errors import ConfigError
from optkit.interfaces import Objective, Params, sized_batches
from optkit.oracle import Oracle
from optkit.registry import Registry, get_registry
from optkit.tasks import ComponentSpec, Task


@dataclass
class NoiseReport:
    """The diagnosis of one objective.

    Attributes:
        objective: the objective's label in the task.
        batch_size: the batch size the task trains with (``None`` when unmeasurable).
        at: ``{"start": (iteration, estimate), "middle": (iteration, estimate)}``; an
            estimate is ``None`` for a deterministic objective.
        skipped: why the objective could not be measured (``None`` when it was).
        optimizer: the label of the optimizer that trained to the middle point.
    """

    objective: str
    batch_size: int | None = None
    optimizer: str = ""
    at: dict[str, tuple[int, NoiseScale | None]] = field(default_factory=dict)
    skipped: str | None = None
    deterministic: bool = False


def default_sizes(batch_size: int) -> list[int]:
    """``b/4, b, 4b`` (at least 1, distinct, increasing) for the task's batch size ``b``."""
    return sorted({max(1, batch_size // 4), batch_size, 4 * batch_size})


def _train(
    objective: Objective,
    optimizer_spec: ComponentSpec,
    task: Task,
    params: Params,
    generator: torch.Generator,
    iterations: int,
    registry: Registry,
) -> Params:
    """``iterations`` steps of the optimizer from ``params`` with the task's executor."""
    optimizer = registry.create("optimizer", optimizer_spec.spec(), optimizer_spec.where)
    executor = registry.create("executor", task.executor.spec(), task.executor.where)
    for who, support in (
        (f"optimizer '{optimizer_spec.label}'", optimizer.supports(objective)),
        (f"executor '{task.executor.name}'", executor.supports(objective)),
    ):
        if not support:
            raise ConfigError(
                f"{task.source}: {who} cannot run on this objective: {support.reason}"
            )
    executor.bind(objective)
    try:
        oracle = Oracle(objective, executor, generator)
        state = optimizer.init(params)
        for _ in range(iterations):
            params, state, _info = optimizer.step(params, state, oracle)
    finally:
        executor.close()
    return params


def _measure(
    objective: Objective, params: Params, seed: int, sizes: Sequence[int], draws: int
) -> NoiseScale:
    generator = torch.Generator().manual_seed(seed)
    norms = {b: minibatch_sq_norms(objective, params, generator, b, draws) for b in sizes}
    return fit_noise_scale(norms)


def diagnose_noise(
    task: Task,
    *,
    sizes: Sequence[int] | None = None,
    draws: int = 32,
    middle_iterations: int | None = None,
    progress: Callable[[str], None] | None = None,
    registry: Registry | None = None,
) -> list[NoiseReport]:
    """Measure every objective of ``task`` (see the module docstring).

    Args:
        sizes: batch sizes to measure (default :func:`default_sizes` of each objective's).
        draws: minibatches per size and point (>= 2).
        middle_iterations: iterations before the middle point (default half the budget).
        registry: where the task's plugins come from (default: the installed plugins).

    Raises:
        ConfigError: bad ``sizes`` / ``draws``, or no objective implements ``SizedBatches``.
    """
    if draws < 2:
        raise ConfigError(f"--draws must be >= 2, got {draws}")
    if sizes is not None and (len(set(sizes)) < 2 or min(sizes) < 1):
        raise ConfigError(f"--sizes needs at least two distinct sizes >= 1, got {list(sizes)}")
    registry = registry or get_registry()
    device = environment.resolve_device(task.device)
    dtype = environment.resolve_dtype(task.dtype)
    seed = task.seeds[0]
    iterations = task.budget.iterations // 2 if middle_iterations is None else middle_iterations
    if iterations < 0:
        raise ConfigError(f"--middle-iterations must be >= 0, got {iterations}")
    first = task.optimizers[0]
    reports = []
    for spec in task.objectives:
        report = NoiseReport(spec.label, optimizer=first.label)
        reports.append(report)
        objective = registry.create("objective", spec.spec(), spec.where)
        support = sized_batches(objective)
        if not support:
            report.skipped = support.reason
            continue
        objective.prepare(device, dtype)
        report.batch_size = int(objective.batch_size)  # type: ignore[attr-defined]
        report.deterministic = not objective.stochastic
        measured_sizes = sorted(set(sizes or default_sizes(report.batch_size)))
        generator = torch.Generator().manual_seed(seed)
        params = objective.init_params(generator)
        for point, at in (("start", 0), ("middle", iterations)):
            if point == "middle":
                if progress is not None:
                    progress(f"{spec.label}: {iterations} iterations of '{first.label}'")
                params = _train(objective, first, task, params, generator, iterations, registry)
            estimate = None
            if not report.deterministic:
                if progress is not None:
                    progress(f"{spec.label}: measuring at iteration {at}, sizes {measured_sizes}")
                estimate = _measure(
                    objective, params, seed + 7919 * (at + 1), measured_sizes, draws
                )
            report.at[point] = (at, estimate)
    if all(r.skipped for r in reports):
        raise ConfigError(
            f"{task.source}: no objective of this task can be measured. "
            + " ".join(r.skipped or "" for r in reports)
        )
    return reports


def _num(value: float) -> str:
    return f"{value:.3g}" if math.isfinite(value) else "unresolved"


def format_noise(reports: Sequence[NoiseReport]) -> str:
    """The readable output of ``optkit diagnose noise``."""
    lines = []
    for report in reports:
        if report.skipped:
            lines.append(f"{report.objective}: skipped: {report.skipped}")
            continue
        lines.append(f"{report.objective} (task batch size {report.batch_size}):")
        for point, (iteration, est) in report.at.items():
            where = f"  {point} (iteration {iteration}"
            where += f", after '{report.optimizer}')" if point == "middle" else ")"
            if est is None:
                lines.append(f"{where}: deterministic gradients, no noise: B_simple = 0")
                continue
            ci = ""
            if est.ci_low is not None and est.ci_high is not None:
                ci = f" [95% CI {_num(est.ci_low)}, {_num(est.ci_high)}]"
            lines.append(
                f"{where}: B_simple = {_num(est.b_simple)}{ci}  (tr Sigma = {est.trace_sigma:.3g},"
                f" |G|^2 = {est.grad_sq:.3g}; sizes {list(est.sizes)} x {est.draws} draws)"
            )
            assert report.batch_size is not None
            lines.append(f"    -> {reading(report.batch_size, est)}")
    return "\n".join(lines)
