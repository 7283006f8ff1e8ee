"""One comparison row per (objective, method label) of the measured runs.

For each row, over the method's measured seeds:

* ``final``: mean and 95% CI of the final value of the target metric (``ok`` seeds only);
* ``steps_to_target`` / ``wall_to_target`` / ``grad_evals_to_target``: the sequential steps,
  wall-clock seconds and gradient evaluations at the first evaluation that reaches the seed's
  target (:mod:`optkit.comparisons.targets`); mean and CI over the seeds that reach it, with
  ``reached = "k/n"`` (``n``: the seeds that have a target);
* ``ratio_to_reference``: the method's steps to target over the reference's, as a ratio of
  means over the seeds on which *both* reach it, with a *paired* bootstrap CI (seed ``s`` of
  the method always against seed ``s`` of the reference); ``None`` when the target is a fixed
  ``value`` (no reference);
* ``ratio_to_versus`` (only when asked for, ``versus=LABEL``): the same paired ratio against
  another method of the same objective, for example OptEx against tuned data_parallel.

Intervals are percentile-bootstrap intervals over seeds (:mod:`optkit.comparisons.bootstrap`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from optkit.comparisons.bootstrap import (
    RESAMPLES,
    Interval,
    bootstrap_mean,
    paired_bootstrap,
)
from optkit.comparisons.measured import Measured, load_measured
from optkit.comparisons.targets import TargetSpec, first_reach, per_seed_targets, target_spec
from optkit.errors import ConfigError

JSON_KEYS = (
    "objective",
    "label",
    "tuned",
    "final",
    "steps_to_target",
    "wall_to_target",
    "ratio_to_reference",
    "grad_evals_to_target",
)
"""The keys of every row of ``optkit report DIR --format json``, in order."""

COUNTERS = {"steps": "sequential_steps", "wall": "wall_s", "grad_evals": "grad_evals"}


@dataclass(frozen=True)
class ToTarget:
    """Cost to reach the target: an interval over the seeds that reach it, ``reached`` of
    ``seeds`` seeds."""

    interval: Interval
    reached: int
    seeds: int

    def to_json(self) -> dict[str, Any]:
        return {**self.interval.to_json(), "reached": f"{self.reached}/{self.seeds}"}


@dataclass(frozen=True)
class ComparisonRow:
    """One (objective, label) of a comparison; :meth:`to_json` gives the report's JSON row."""

    objective: str
    label: str
    tuned: dict[str, Any]
    metric: str
    final: Interval
    steps_to_target: ToTarget
    wall_to_target: ToTarget
    grad_evals_to_target: ToTarget
    ratio_to_reference: Interval | None
    ratio_to_versus: Interval | None = None

    def to_json(self) -> dict[str, Any]:
        ratio, versus = self.ratio_to_reference, self.ratio_to_versus
        out = {
            "objective": self.objective,
            "label": self.label,
            "tuned": dict(self.tuned),
            "final": self.final.to_json(),
            "steps_to_target": self.steps_to_target.to_json(),
            "wall_to_target": self.wall_to_target.to_json(),
            "ratio_to_reference": None if ratio is None else ratio.to_json(),
            "grad_evals_to_target": self.grad_evals_to_target.to_json(),
        }
        if versus is not None:
            out["ratio_to_versus"] = versus.to_json()
        return out


@dataclass(frozen=True)
class Comparison:
    """All rows of a run directory and the target of each objective."""

    rows: list[ComparisonRow]
    targets: dict[str, TargetSpec]
    maximize: dict[str, bool]
    versus: str | None = None

    def to_json(self) -> list[dict[str, Any]]:
        return [row.to_json() for row in self.rows]


def _costs(
    measured: Measured,
    objective: str,
    label: str,
    spec: TargetSpec,
    targets: dict[int, float],
) -> dict[str, dict[Any, float | None]]:
    """counter name -> seed -> cost at the first reaching row (``None``: not reached), for
    the seeds of ``label`` that have a target."""
    maximize = measured.maximize(objective, spec.metric)
    out: dict[str, dict[Any, float | None]] = {name: {} for name in COUNTERS}
    for seed, run in measured.runs[(objective, label)].items():
        if seed not in targets:
            continue
        row = first_reach(run, spec.metric, targets[seed], maximize)
        for name, key in COUNTERS.items():
            value = None if row is None else row.get(key)
            out[name][seed] = None if value is None else float(value)
    return out


def _to_target(costs: dict[Any, float | None], resamples: int, seed: int) -> ToTarget:
    reached = [c for c in costs.values() if c is not None]
    return ToTarget(
        bootstrap_mean(reached, resamples=resamples, seed=seed), len(reached), len(costs)
    )


def _final(measured: Measured, objective: str, label: str, metric: str) -> list[float]:
    runs = measured.runs[(objective, label)].values()
    values = [run.final(metric) for run in runs if run.ok]
    if not any(run.evals for run in runs):  # hyperoptimizer cells: no eval rows
        values = [run.end.get("best_score") for run in runs if run.ok and run.end]
    return [float(v) for v in values if v is not None]


def paired_steps_ratio(
    mine: dict[Any, float | None], theirs: dict[Any, float | None], resamples: int, seed: int
) -> Interval:
    """Steps to target of one method over another's: a ratio of means over the seeds on
    which both reach the target, with a paired bootstrap CI."""
    paired = [s for s, c in mine.items() if c is not None and theirs.get(s) is not None]
    return paired_bootstrap(
        np.array([mine[s] for s in paired], dtype=float),
        np.array([theirs[s] for s in paired], dtype=float),
        resamples=resamples,
        seed=seed,
    )


def compare_measured(
    measured: Measured,
    *,
    metric: str | None = None,
    versus: str | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Comparison:
    """The :class:`Comparison` of grouped measured runs (see the module docstring).

    Args:
        metric: the metric for objectives of a task without ``[target]`` (else the primary).
        versus: a method label: every row also gets ``ratio_to_versus``, its steps to target
            over that method's, paired by seed.
        resamples / seed: of the bootstrap (fixed seed: reports are reproducible).

    Raises:
        ConfigError: ``versus`` is not a method of every objective (the labels are named).
    """
    rows: list[ComparisonRow] = []
    specs: dict[str, TargetSpec] = {}
    maximize: dict[str, bool] = {}
    for objective in measured.objectives():
        labels = measured.labels(objective)
        if versus is not None and versus not in labels:
            raise ConfigError(
                f"--versus '{versus}' is not a method of objective '{objective}' in these"
                f" results; its methods: {', '.join(labels)}"
            )
        spec = specs[objective] = target_spec(measured, objective, metric)
        maximize[objective] = measured.maximize(objective, spec.metric)
        targets = per_seed_targets(measured, objective, spec)
        costs = {label: _costs(measured, objective, label, spec, targets) for label in labels}
        reference = costs.get(spec.reference or "") if spec.reference is not None else None
        for label in labels:
            steps = costs[label]["steps"]
            ratio = None
            if spec.reference is not None:
                ratio = paired_steps_ratio(
                    steps, (reference or {}).get("steps", {}), resamples, seed
                )
            rows.append(
                ComparisonRow(
                    objective=objective,
                    label=label,
                    tuned=measured.tuned(objective, label),
                    metric=spec.metric,
                    final=bootstrap_mean(
                        _final(measured, objective, label, spec.metric),
                        resamples=resamples,
                        seed=seed,
                    ),
                    steps_to_target=_to_target(steps, resamples, seed),
                    wall_to_target=_to_target(costs[label]["wall"], resamples, seed),
                    grad_evals_to_target=_to_target(costs[label]["grad_evals"], resamples, seed),
                    ratio_to_reference=ratio,
                    ratio_to_versus=None
                    if versus is None
                    else paired_steps_ratio(steps, costs[versus]["steps"], resamples, seed),
                )
            )
    return Comparison(rows, specs, maximize, versus)


def compare(
    run_dir: str | Path,
    *,
    metric: str | None = None,
    versus: str | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Comparison:
    """:func:`compare_measured` over a run directory (rows, manifest and tuning.json)."""
    return compare_measured(
        load_measured(run_dir), metric=metric, versus=versus, resamples=resamples, seed=seed
    )
