"""Per-seed targets and the first evaluation that reaches them.

A task's ``[target]`` section (as written in ``manifest.json``) sets, for each objective:

* ``metric``: the metric that must reach the target;
* ``reference = "<label>"``: per measured seed ``s``, the target is that label's final value
  of ``metric`` in its own run of seed ``s`` (paired by seed); or
* ``value = <number>``: the same target for every seed.

Without ``[target]`` the comparison falls back to what ``optkit report`` always showed: the
reference is the objective's *first* label and the metric the one the report shows (the
``--metric`` given, else the objective's primary metric, else ``gap``, else ``loss``).

A method reaches the target at its first evaluation whose value is ``<= target`` (a metric
to minimize) or ``>= target`` (to maximize, as the objective's ``metric_direction`` says), up
to a relative :data:`TIE_RTOL`: a run that ends equal to the reference except for float32
rounding (data_parallel averaging N identical gradients of a deterministic objective) ties.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from optkit.comparisons.measured import Measured, SeedRun
from optkit.errors import ResultsError


@dataclass(frozen=True)
class TargetSpec:
    """How one objective's per-seed targets are set.

    Attributes:
        metric: the metric compared with the target.
        reference: the label whose final values set the targets, or ``None`` with ``value``.
        value: a fixed target, or ``None`` with ``reference``.
        implicit: ``True`` when the task has no ``[target]`` (first label as reference).
    """

    metric: str
    reference: str | None
    value: float | None
    implicit: bool = False

    def describe(self, maximize: bool) -> str:
        sign = ">=" if maximize else "<="
        if self.value is not None:
            return f"{self.metric} {sign} {self.value:g}"
        return f"{self.metric} {sign} {self.reference}'s final"


def shown_metric(measured: Measured, objective: str, metric: str | None) -> str:
    """The metric a report shows for ``objective`` when the task has no ``[target]``:
    ``metric`` where reported, else the primary metric, else ``gap``, else ``loss``."""
    present = measured.eval_metrics(objective)
    if metric is not None and metric in present:
        return metric
    primary = measured.primary.get(objective)
    if primary is not None and primary in present:
        return primary
    return "gap" if "gap" in present else "loss"


def target_spec(measured: Measured, objective: str, metric: str | None = None) -> TargetSpec:
    """The :class:`TargetSpec` of ``objective`` from the task's ``[target]`` section, else
    the implicit one (see the module docstring).

    Raises:
        ResultsError: ``[target]`` is malformed (no ``metric``, both or neither of
            ``reference`` and ``value``, a non-numeric ``value``).
    """
    section: Any = measured.task.get("target")
    labels = measured.labels(objective)
    if section is None:
        return TargetSpec(
            shown_metric(measured, objective, metric), labels[0] if labels else None, None, True
        )
    where = "manifest.json: task.target"
    if not isinstance(section, dict) or not isinstance(section.get("metric"), str):
        raise ResultsError(f"{where}: expected a table with a string 'metric', got {section!r}")
    reference, value = section.get("reference"), section.get("value")
    if (reference is None) == (value is None):
        raise ResultsError(
            f"{where}: give exactly one of 'reference' (a label of the task) and 'value'"
            f" (a number), got {section!r}"
        )
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    ):
        raise ResultsError(f"{where}: 'value' must be a finite number, got {value!r}")
    if value is not None:
        return TargetSpec(section["metric"], None, float(value))
    return TargetSpec(section["metric"], str(reference), None)


def per_seed_targets(measured: Measured, objective: str, spec: TargetSpec) -> dict[int, float]:
    """seed -> target value. With a reference: only the seeds whose reference run finished
    (status ``ok``) and reported ``spec.metric``; the other seeds have no target."""
    seeds = {seed for (obj, _), runs in measured.runs.items() if obj == objective for seed in runs}
    if spec.value is not None:
        return dict.fromkeys(sorted(seeds, key=str), spec.value)
    runs = measured.runs.get((objective, spec.reference or ""), {})
    out = {}
    for seed, run in runs.items():
        final = run.final(spec.metric) if run.ok else None
        if final is not None and math.isfinite(final):
            out[seed] = final
    return out


TIE_RTOL = 1e-6
"""Relative tolerance under which a value counts as equal to the target (a few float32 ulps)."""


def reaches(value: float, target: float, maximize: bool) -> bool:
    """Whether ``value`` reaches ``target`` in the metric's direction, ties within
    :data:`TIE_RTOL` included."""
    slack = TIE_RTOL * max(abs(target), 1e-12)
    return value >= target - slack if maximize else value <= target + slack


def first_reach(run: SeedRun, metric: str, target: float, maximize: bool) -> dict[str, Any] | None:
    """The first eval row of ``run`` whose ``metric`` reaches ``target``, or ``None``."""
    for row in run.evals:
        value = row.get(metric)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if reaches(float(value), target, maximize):
            return row
    return None
