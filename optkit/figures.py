"""Convergence figures that do not mislead (written by :func:`optkit.report.report`).

One PNG per metric, ``<metric>-vs-<x>.png`` (``score-vs-trial.png`` for hyperoptimizer
scores); in it one panel per objective that shows that metric. In a panel, each method (task
label) has

* a line: the mean over its seeds that did not diverge, at each x (a seed that stopped early
  because it reached its target holds its last value; a failed seed counts until it stopped);
* a band: the min-max range over the same seeds where at least two have a value; the legend
  says so and over how many seeds;
* its own colour, line style *and* marker, so curves that coincide stay visible; a method whose
  mean curve equals an earlier method's says so in the legend (``data_parallel (= adam)``);
* for each diverged seed, a thin line of its colour ending in an ``x`` at its last finite
  value, counted in the legend (``sgd (1/3 diverged)``). A panel whose every run diverged
  or failed says so in its title, with the x where the last one stopped.

Positive metrics spanning more than a decade get a log y axis, with major ticks at 1, 2 and 5
per decade (each decade when the axis spans more than three) labelled plainly (``0.02``,
``500``, ``2e4``), and no minor labels.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from optkit.errors import ConfigError

LINE_STYLES: tuple[Any, ...] = ("-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 1)))
MARKERS = ("o", "s", "^", "D", "v", "P", "*", "X", "<", ">")
MARKERS_PER_CURVE = 8
LOG_WHEN_RATIO = 10.0
"""A positive metric gets a log axis when its largest plotted value is over this many times
its smallest."""


@dataclass
class Method:
    """One (objective, label): each seed's finite points, sorted by x, and its end status.

    ``status`` maps seed -> ``"ok"``, ``"diverged"``, ``"failed"`` or ``"running"`` (no end
    row yet, e.g. a report of a run in progress).
    """

    objective: str
    label: str
    points: dict[int, list[tuple[float, float]]] = field(default_factory=dict)
    status: dict[int, str] = field(default_factory=dict)

    @property
    def seeds(self) -> list[int]:
        return sorted(set(self.points) | set(self.status))

    def count(self, status: str) -> int:
        return sum(1 for s in self.seeds if self.status.get(s, "running") == status)


def collect(rows: list[dict[str, Any]], metrics: dict[str, str], x: str) -> list[Method]:
    """One :class:`Method` per (objective, label), in the order the rows first name them.

    Points are ``(x, metric)`` from eval rows (``(trial number, score)`` from trial rows when
    the objective's metric is ``score``); rows of the task's ``[tuning]`` phase (``phase``
    other than ``measure``) and non-finite or missing values are left out. An
    objective with end rows but no value (every run diverged at once) still gets a method.
    """
    methods: dict[tuple[str, str], Method] = {}
    for row in rows:
        objective, label = row.get("objective"), row.get("label")
        if objective is None or label is None or row.get("phase", "measure") != "measure":
            continue  # a [tuning] phase's searches are not measured runs
        method = methods.setdefault((objective, label), Method(objective, label))
        seed = int(row.get("seed", 0))
        event = row.get("event")
        if event == "end":
            method.status[seed] = str(row.get("status", "ok"))
            continue
        metric = metrics.get(objective, "loss")
        value: Any
        xv: Any
        if event == "trial" and metric == "score":
            value, xv = row.get("score"), float(row.get("trial", 0)) + 1
        elif event == "eval":
            value, xv = row.get(metric), row.get(x)
        else:
            continue
        if value is None or xv is None or not np.isfinite(float(value)):
            continue
        method.points.setdefault(seed, []).append((float(xv), float(value)))
    for method in methods.values():
        for series in method.points.values():
            series.sort()
    return list(methods.values())


@dataclass
class Curve:
    """A method on a common x grid: mean, band and how many seeds have a value at each x."""

    grid: np.ndarray
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    count: np.ndarray


def aggregate(method: Method, seeds: Iterable[int]) -> Curve:
    """Mean and min-max over ``seeds`` of ``method`` on the union of their x values.

    A seed holds its last value after its last point only if it finished ``ok`` (it stopped
    early at its target); a failed or unfinished seed contributes nothing after its last
    point.
    """
    series = {s: method.points[s] for s in seeds if method.points.get(s)}
    grid = np.array(sorted({xv for pts in series.values() for xv, _ in pts}), dtype=float)
    values = np.full((max(len(series), 1), len(grid)), np.nan)
    for i, (seed, points) in enumerate(sorted(series.items())):
        xs = np.array([p[0] for p in points])
        ys = np.array([p[1] for p in points])
        idx = np.searchsorted(xs, grid, side="right") - 1
        valid = idx >= 0
        if method.status.get(seed) != "ok":
            valid &= grid <= xs[-1]
        values[i, valid] = ys[idx[valid]]
    count = np.isfinite(values).sum(axis=0)
    filled = np.where(np.isfinite(values), values, 0.0)
    mean = np.where(count > 0, filled.sum(axis=0) / np.maximum(count, 1), np.nan)
    lo = np.where(count > 1, np.where(np.isfinite(values), values, np.inf).min(axis=0), np.nan)
    hi = np.where(count > 1, np.where(np.isfinite(values), values, -np.inf).max(axis=0), np.nan)
    return Curve(grid, mean, lo, hi, count)


def same_curve(a: Curve, b: Curve) -> bool:
    """Whether two mean curves coincide (same x grid, values equal to 1e-6 relative)."""
    if a.grid.shape != b.grid.shape or not np.array_equal(a.grid, b.grid) or not a.grid.size:
        return False
    return bool(np.allclose(a.mean, b.mean, rtol=1e-6, atol=0.0, equal_nan=True))


def tick_label(value: float, _position: object = None) -> str:
    """A log-axis tick label: plain for 0.001 <= |v| < 10000, else ``2e4``-style."""
    if value == 0 or 1e-3 <= abs(value) < 1e4:
        return f"{value:g}"
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _log_axis(ax: Any, values: Iterable[float]) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    finite = [v for v in values if np.isfinite(v)]
    decades = np.log10(max(finite) / min(finite)) if finite else 1.0
    ax.set_yscale("log")
    subs = (1.0, 2.0, 5.0) if decades <= 3 else (1.0,)
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs, numticks=12))
    ax.yaxis.set_major_formatter(FuncFormatter(tick_label))
    ax.yaxis.set_minor_locator(LogLocator(base=10, subs=tuple(range(1, 10)), numticks=12))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _seed_phrase(counts: list[int]) -> str:
    low, high = min(counts), max(counts)
    return f"{low} seeds" if low == high else f"{low}-{high} seeds"


def draw_panel(ax: Any, objective: str, methods: list[Method], metric: str, x: str) -> None:
    """One objective's panel.

    Per method: the mean line and min-max band over its seeds that did not diverge, in the
    method's colour, line style and marker; each diverged seed as a thin line of the same
    colour ending in an ``x`` at its last finite value.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    curves: list[Curve] = []
    plotted: list[float] = []
    handles: list[Any] = []
    kept_counts: list[int] = []
    banded = diverged_any = False
    for i, method in enumerate(methods):
        color, style = f"C{i % 10}", LINE_STYLES[i % len(LINE_STYLES)]
        diverged = [s for s in method.seeds if method.status.get(s) == "diverged"]
        kept = [s for s in method.seeds if s not in diverged]
        curve = aggregate(method, kept)
        n, failed = len(method.seeds), method.count("failed")
        notes = [f"{k}/{n} {what}" for k, what in ((len(diverged), "diverged"), (failed, "failed"))]
        notes = [note for note in notes if not note.startswith("0/")]
        earlier = zip(methods, curves, strict=False)
        twin = next((m.label for m, c in earlier if same_curve(curve, c)), None)
        curves.append(curve)
        if twin is not None:
            notes.append(f"= {twin}")
        label = f"{method.label} ({', '.join(notes)})" if notes else method.label
        if curve.grid.size:
            kept_counts.append(len(kept))
            # markers of different methods land on different points (coinciding curves)
            step = max(min(len(methods), 4), len(curve.grid) // MARKERS_PER_CURVE)
            (line,) = ax.plot(
                curve.grid,
                curve.mean,
                color=color,
                linestyle=style,
                marker=MARKERS[i % len(MARKERS)],
                markevery=((i * step) // len(methods) % step, step),
                markersize=5,
                markerfacecolor="none" if i % 2 else color,
                linewidth=1.6,
                label=label,
                zorder=3 + i,
            )
            handles.append(line)
            plotted.extend(curve.mean[np.isfinite(curve.mean)].tolist())
        else:  # every seed diverged: the thin traces below are all there is
            handles.append(Line2D([], [], color=color, linestyle=style, lw=0.9, label=label))
        if np.isfinite(curve.lo).any():
            banded = True
            ax.fill_between(curve.grid, curve.lo, curve.hi, color=color, alpha=0.15, lw=0)
            plotted.extend(curve.lo[np.isfinite(curve.lo)].tolist())
            plotted.extend(curve.hi[np.isfinite(curve.hi)].tolist())
        for seed in diverged:
            points = method.points.get(seed)
            if not points:
                continue
            diverged_any = True
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, color=color, linestyle=style, lw=0.9, alpha=0.7, zorder=2)
            ax.plot(xs[-1], ys[-1], marker="x", color=color, ms=10, mew=2.2, zorder=20)
            plotted.extend(ys)
    if banded:
        what = "seeds that did not diverge" if diverged_any else _seed_phrase(kept_counts)
        handles.append(Patch(color="0.5", alpha=0.3, label=f"band: min-max over {what}"))
    if diverged_any:
        handles.append(
            Line2D(
                [],
                [],
                color="0.3",
                lw=0.9,
                marker="x",
                ms=8,
                mew=2,
                label="diverged seed, x: last finite value",
            )
        )
    _explain_empty(ax, objective, methods, x)
    positive = bool(plotted) and min(plotted) > 0
    if positive and max(plotted) / min(plotted) > LOG_WHEN_RATIO:
        _log_axis(ax, plotted)
    ax.set_xlabel("trial" if metric == "score" else x.replace("_", " "))
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3, which="major")
    if handles:
        ax.legend(handles=handles, fontsize=8)


def _explain_empty(ax: Any, objective: str, methods: list[Method], x: str) -> None:
    """Title the panel; say in it when every run diverged or failed (and where), and when
    there is nothing at all to draw."""
    runs = [(m, s) for m in methods for s in m.seeds]
    bad = [(m, s) for m, s in runs if m.status.get(s) in ("diverged", "failed")]
    if runs and len(bad) == len(runs):
        diverged = sum(1 for m, s in bad if m.status.get(s) == "diverged")
        last = [m.points[s][-1][0] for m, s in bad if m.points.get(s)]
        where = f", the last by {x.replace('_', ' ')} {max(last):g}" if last else ""
        ax.set_title(
            f"{objective}: every run stopped ({diverged}/{len(runs)} diverged{where})",
            fontsize=10,
            color="firebrick",
        )
    else:
        ax.set_title(f"{objective}: mean over seeds", fontsize=10)
    if not any(m.points for m in methods):
        ax.text(
            0.5,
            0.5,
            "no finite value to plot:\n"
            + "\n".join(
                f"{m.label}: {m.count('diverged')}/{len(m.seeds)} diverged" for m in methods
            ),
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=9,
        )


def figure_path(run_dir: Path, metric: str, x: str) -> Path:
    """``<metric>-vs-<x>.png``; hyperoptimizer scores are plotted against the trial number."""
    return run_dir / f"{metric}-vs-{'trial' if metric == 'score' else x}.png"


def build_figures(
    rows: list[dict[str, Any]], metrics: dict[str, str], x: str, title: str = ""
) -> list[tuple[str, Any]]:
    """``(metric, matplotlib Figure)`` per metric shown, in the order the metrics' objectives
    first appear in ``rows``; each figure has one panel (Axes) per objective of that metric.

    Args:
        rows: the run's result rows.
        metrics: objective -> the metric shown for it (objectives missing here get ``loss``).
        x: the x-axis column of eval rows.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = collect(rows, metrics, x)
    if not methods:
        raise ConfigError(f"no metric values against '{x}' in these results to plot")
    by_metric: dict[str, dict[str, list[Method]]] = defaultdict(lambda: defaultdict(list))
    for method in methods:
        by_metric[metrics.get(method.objective, "loss")][method.objective].append(method)
    out = []
    for metric, objectives in by_metric.items():
        fig, axes = plt.subplots(
            1, len(objectives), figsize=(5.6 * len(objectives), 4.2), squeeze=False
        )
        for ax, (objective, group) in zip(axes[0], objectives.items(), strict=True):
            draw_panel(ax, objective, group, metric, x)
        fig.suptitle(f"{title}: {metric}" if title else metric)
        fig.tight_layout()
        out.append((metric, fig))
    return out


def plot_metrics(
    rows: list[dict[str, Any]], metrics: dict[str, str], x: str, run_dir: Path, title: str = ""
) -> list[Path]:
    """Write :func:`build_figures`' figures to ``run_dir/<metric>-vs-<x>.png`` (atomically);
    return their paths in the same order."""
    import matplotlib.pyplot as plt

    paths = []
    for metric, fig in build_figures(rows, metrics, x, title):
        path = figure_path(run_dir, metric, x)
        tmp = path.with_name(f".{path.stem}.tmp.png")
        try:
            fig.savefig(tmp, dpi=110)
        finally:
            plt.close(fig)
        tmp.replace(path)
        paths.append(path)
    return paths
