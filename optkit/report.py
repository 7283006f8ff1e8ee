"""Tables and convergence plots from a run directory (``optkit report DIR``).

The table has one line per (objective, label): the final value of the chosen metric as mean
and standard deviation over seeds, with counters. The figures (:mod:`optkit.figures`, one file
per metric, one panel per objective) show the metric against the chosen x axis (sequential
steps, gradient evaluations, wall-clock seconds or iterations): the mean over seeds as a line,
the min-max over seeds as a band, diverged runs marked where they diverged.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optkit.comparisons.measured import is_measured
from optkit.comparisons.targets import reaches
from optkit.errors import ConfigError
from optkit.figures import plot_metrics
from optkit.results import atomic_write_text, load_rows

if TYPE_CHECKING:
    from optkit.comparisons.summary import Comparison

X_AXES = ("sequential_steps", "grad_evals", "wall_s", "iteration")


@dataclass
class Line:
    objective: str
    label: str
    metric: str
    seeds: int
    failed: int
    mean: float
    std: float
    steps: float
    grad_evals: float
    wall_s: float
    to_reference: str = "—"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def metrics_by_objective(rows: list[dict[str, Any]], metric: str | None) -> dict[str, str]:
    """The metric shown for each objective.

    ``metric`` where that objective reports it; otherwise (or when ``None``) the objective's
    declared ``primary_metric``, ``gap`` for objectives that report it, ``score`` for
    hyperoptimizer cells, else ``loss``.
    """
    keys: dict[str, set[str]] = defaultdict(set)
    events: dict[str, set[str]] = defaultdict(set)
    primary: dict[str, str] = {}
    for row in rows:
        if row.get("event") in ("eval", "trial"):
            keys[row["objective"]].update(k for k, v in row.items() if v is not None)
            events[row["objective"]].add(row["event"])
        elif row.get("event") == "end" and row.get("primary_metric"):
            primary[row["objective"]] = row["primary_metric"]
    chosen = {}
    for objective, present in keys.items():
        if metric is not None and metric in present:
            chosen[objective] = metric
        elif primary.get(objective) in present:
            chosen[objective] = primary[objective]
        elif "eval" not in events[objective]:
            chosen[objective] = "score"
        elif "gap" in present:
            chosen[objective] = "gap"
        else:
            chosen[objective] = "loss"
    return chosen


def summarize(rows: list[dict[str, Any]], metrics: dict[str, str]) -> list[Line]:
    """One :class:`Line` per (objective, label) in task order, from each seed's last
    evaluation."""
    ends: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    finals: dict[tuple[str, str, int], dict[str, Any]] = {}
    for row in rows:
        key = (row["objective"], row["label"])
        if row.get("event") == "end":
            ends[key].append(row)
        elif row.get("event") == "eval":
            finals[(*key, row["seed"])] = row
    lines = []
    for key, end_rows in ends.items():  # task order: the first method is the reference
        metric = metrics.get(key[0], "loss")
        ok_seeds = [r["seed"] for r in end_rows if r.get("status") == "ok"]
        last = [finals[(*key, s)] for s in ok_seeds if (*key, s) in finals]
        if metric == "score":
            values = [r.get("best_score") for r in end_rows if r.get("status") == "ok"]
        else:
            values = [r.get(metric) for r in last]
        mean, std = _mean_std([float(v) for v in values if v is not None])
        lines.append(
            Line(
                objective=key[0],
                label=key[1],
                metric=metric,
                seeds=len(end_rows),
                failed=len(end_rows) - len(ok_seeds),
                mean=mean,
                std=std,
                steps=_mean_std([r.get("sequential_steps") or 0 for r in last])[0],
                grad_evals=_mean_std([r.get("grad_evals") or 0 for r in last])[0],
                wall_s=_mean_std([r.get("wall_s") or 0.0 for r in last])[0],
            )
        )
    add_steps_to_reference(rows, metrics, lines)
    return lines


def add_steps_to_reference(
    rows: list[dict[str, Any]], metrics: dict[str, str], lines: list[Line]
) -> None:
    """Fill ``Line.to_reference``: the sequential steps each method needs to reach the final
    value of the objective's first method, the reference (e.g. vanilla), seed by seed.

    Mean over seeds of the first evaluation that reaches the reference's final value for that
    seed; ``never (k/n)`` when k of n seeds never do. The comparison follows the metric's
    direction as the objective declared it.
    """
    directions: dict[str, dict[str, str]] = {}
    series: dict[tuple[str, str, int], list[tuple[float, float]]] = defaultdict(list)
    for row in rows:
        if row.get("event") == "end" and isinstance(row.get("directions"), dict):
            directions[row["objective"]] = row["directions"]
        elif row.get("event") == "eval":
            metric = metrics.get(row["objective"], "loss")
            value, steps = row.get(metric), row.get("sequential_steps")
            if value is not None and steps is not None:
                key = (row["objective"], row["label"], row["seed"])
                series[key].append((float(steps), float(value)))
    first_label: dict[str, str] = {}
    for row in rows:
        first_label.setdefault(row["objective"], row["label"])
    references = {ln.objective: ln for ln in lines if ln.label == first_label.get(ln.objective)}
    for line in lines:
        ref = references.get(line.objective)
        metric = metrics.get(line.objective, "loss")
        if ref is None or metric == "score" or math.isnan(ref.mean):
            continue
        maximize = directions.get(line.objective, {}).get(metric, "min") == "max"
        reached, missed = [], 0
        for (objective, label, seed), points in series.items():
            if objective != line.objective or label != line.label:
                continue
            # paired by seed: the reference's own final value for this seed (else the mean)
            ref_points = series.get((objective, ref.label, seed))
            target = max(ref_points)[1] if ref_points else ref.mean
            hits = [steps for steps, value in sorted(points) if reaches(value, target, maximize)]
            if hits:
                reached.append(hits[0])
            else:
                missed += 1
        if missed:
            line.to_reference = f"never ({missed}/{missed + len(reached)})"
        elif reached:
            line.to_reference = f"{statistics.fmean(reached):.1f}"


def format_table(lines: list[Line]) -> str:
    """A Markdown table (also readable in a terminal)."""
    header = (
        "| objective | optimizer | seeds | failed | metric | final (mean ± std) |"
        " sequential steps | steps to reference's final | grad evals | wall s |"
    )
    out = [header, "|" + "---|" * 10]
    for ln in lines:
        head = f"| {ln.objective} | {ln.label} | {ln.seeds} | {ln.failed} | {ln.metric} |"
        if math.isnan(ln.mean):
            out.append(f"{head} — | — | — | — | — |")
            continue
        if math.isnan(ln.steps):  # hyperoptimizer cells: trials, no per-iteration rows
            out.append(f"{head} {ln.mean:.4g} ± {ln.std:.2g} | — | — | — | — |")
            continue
        out.append(
            f"{head} {ln.mean:.4g} ± {ln.std:.2g} | {ln.steps:.0f} | {ln.to_reference} |"
            f" {ln.grad_evals:.0f} | {ln.wall_s:.3f} |"
        )
    return "\n".join(out)


def report(
    run_dir: str | Path,
    *,
    metric: str | None = None,
    x: str = "sequential_steps",
    comparison: Comparison | None = None,
) -> tuple[str, Path]:
    """Write ``report.md`` and one ``<metric>-vs-<x>.png`` per metric shown into ``run_dir``
    (``comparison``: the one :func:`optkit.comparisons.compare` gave for these results, when
    the caller has it already, e.g. with a ``versus`` column; else computed here).

    Returns:
        The table, and the figure of ``metric`` (else of the first objective's metric); every
        figure is linked from ``report.md``.
    """
    run_dir = Path(run_dir)
    rows = [r for r in load_rows(run_dir) if is_measured(r)]  # not the [tuning] trials' rows
    if not rows:
        raise ConfigError(f"{run_dir}: results.jsonl holds no rows of measured runs yet")
    numeric = {k for r in rows if r.get("event") == "eval" for k, v in r.items() if _is_number(v)}
    if x not in X_AXES and x not in numeric:
        raise ConfigError(
            f"unknown x axis '{x}'; valid: {', '.join(X_AXES)}, or a numeric column of these"
            f" results ({', '.join(sorted(numeric - set(X_AXES)))})"
        )
    known = {k for r in rows for k in r}
    if metric is not None and metric not in known:
        skip = ("task", "cell", "event", "status", "error")
        available = sorted(k for k in known if k not in skip)
        raise ConfigError(
            f"metric '{metric}' is not in these results; available: {', '.join(available)}"
        )
    metrics = metrics_by_objective(rows, metric)
    table = format_table(summarize(rows, metrics))
    task = rows[0].get("task", "")
    figures = plot_metrics(rows, metrics, x, run_dir, title=task)
    chosen = [f for f in figures if metric is not None and f.name.startswith(f"{metric}-vs-")]
    figure = (chosen or figures)[0]
    links = "\n\n".join(f"![{f.stem}]({f.name})" for f in figures)
    atomic_write_text(
        run_dir / "report.md",
        f"# {task}\n\n{table}\n\n{links}\n\n{comparison_section(run_dir, metric, comparison)}",
    )
    return table, figure


def comparison_section(
    run_dir: Path, metric: str | None, comparison: Comparison | None = None
) -> str:
    """The part of ``report.md`` from :mod:`optkit.comparisons`: the table with 95% bootstrap
    CIs and targets, and the performance profile (written beside it) for several objectives."""
    from optkit.comparisons import compare
    from optkit.comparisons.profile import plot_profile
    from optkit.comparisons.table import format_comparison

    if comparison is None:
        comparison = compare(run_dir, metric=metric)
    text = f"## Comparison over seeds\n\n{format_comparison(comparison)}\n"
    profile = plot_profile(comparison, run_dir / "profile-steps_to_target.png")
    if profile is not None:
        text += f"\n![performance profile]({profile.name})\n"
    return text
