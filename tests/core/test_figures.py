"""Figures that do not mislead: checked on the matplotlib objects and files of real runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from matplotlib.figure import Figure
from optkit_synthetic.functions import Sphere

import optkit
from optkit import hookimpl
from optkit.plugins import load
from optkit.registry import Registry
from optkit.report import report
from optkit.results import load_rows

SEEDS = [0, 1, 2]

MIXED = {
    "name": "figures-mixed",
    "seeds": SEEDS,
    "budget": {"iterations": 12, "eval_every": 1},
    "objectives": [
        {"name": "rosenbrock", "dim": 10, "init_low": -2.0, "init_high": 2.0},
        {"name": "sphere", "dim": 10},
    ],
    "optimizers": [
        {"name": "adam", "lr": 0.05},
        # deterministic objectives: N identical gradients averaged, so the same curve as adam
        {"name": "data_parallel", "base": "adam", "base_config": {"lr": 0.05}, "parallelism": 3},
        # diverges on rosenbrock from [-2, 2]^10 within a few steps; on sphere x <- -2x stays
        # finite over 12 steps
        {"name": "sgd", "lr": 1.5, "label": "sgd-huge"},
    ],
}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("figures") / "mixed"
    optkit.run(MIXED, out)
    return out


@pytest.fixture
def saved(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """Every convergence figure (``<metric>-vs-<x>``) saved while the test runs."""
    figures: list[Figure] = []
    original = Figure.savefig

    def savefig(self: Figure, fname: Any, *args: Any, **kwargs: Any) -> None:
        if "-vs-" in Path(fname).name:
            figures.append(self)
        original(self, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return figures


def panels(saved: list[Figure], run_dir: Path, metric: str | None = None) -> dict[str, Any]:
    """objective -> its Axes, over the figures ``report(run_dir)`` writes."""
    del saved[:]
    report(run_dir, metric=metric)
    return {ax.get_title().split(":")[0]: ax for fig in saved for ax in fig.axes}


def legend_texts(ax: Any) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def mean_line(ax: Any, label: str) -> Any:
    return next(line for line in ax.get_lines() if line.get_label() == label)


def test_coinciding_curves_stay_visible(mixed: Path, saved: list[Figure]) -> None:
    sphere = panels(saved, mixed)["sphere"]
    adam = mean_line(sphere, "adam")
    twin = mean_line(sphere, "data_parallel (= adam)")  # the legend says they coincide
    assert list(twin.get_ydata()) == pytest.approx(list(adam.get_ydata()), rel=1e-6)
    assert adam.get_linestyle() != twin.get_linestyle()
    assert adam.get_marker() != twin.get_marker()
    assert adam.get_marker() not in ("", "None", None)
    assert adam.get_markevery() != twin.get_markevery()  # markers interleave, never overlap


def test_a_diverged_seed_is_marked_where_it_diverged_and_counted(
    mixed: Path, saved: list[Figure]
) -> None:
    rows = load_rows(mixed)
    ends = [r for r in rows if r["event"] == "end" and r["objective"] == "rosenbrock"]
    diverged = {r["seed"] for r in ends if r["label"] == "sgd-huge" and r["status"] == "diverged"}
    assert diverged == set(SEEDS)  # the premise: sgd lr 1.5 diverges on every seed
    ax = panels(saved, mixed)["rosenbrock"]
    assert "sgd-huge (3/3 diverged)" in legend_texts(ax)
    assert "adam" in legend_texts(ax)  # no "diverged" where nothing diverged
    last = {}
    for r in rows:
        if r["event"] == "eval" and r["cell"].startswith("rosenbrock|sgd-huge|"):
            last[r["seed"]] = (float(r["sequential_steps"]), float(r["gap"]))
    crosses = {
        (float(line.get_xdata()[0]), float(line.get_ydata()[0]))
        for line in ax.get_lines()
        if line.get_marker() == "x"
    }
    assert crosses == set(last.values())  # one x per diverged seed, at its last finite value


def test_an_objective_whose_every_run_diverged_says_so(tmp_path: Path, saved: list[Figure]) -> None:
    task = {**MIXED, "name": "all-diverge", "optimizers": [MIXED["optimizers"][2]]}
    task["budget"] = {"iterations": 6, "eval_every": 1}
    optkit.run(task, tmp_path / "o")
    found = panels(saved, tmp_path / "o")
    rosenbrock = found["rosenbrock"]
    assert "every run stopped (3/3 diverged" in rosenbrock.get_title()
    assert len([ln for ln in rosenbrock.get_lines() if ln.get_marker() == "x"]) == 3
    assert "every run" not in found["sphere"].get_title()  # the healthy panel is unchanged


def test_bands_say_what_they_are(mixed: Path, saved: list[Figure]) -> None:
    found = panels(saved, mixed)
    assert "band: min-max over 3 seeds" in legend_texts(found["sphere"])
    assert "band: min-max over seeds that did not diverge" in legend_texts(found["rosenbrock"])
    assert "diverged seed, x: last finite value" in legend_texts(found["rosenbrock"])


class Distance(Sphere):
    """A sphere whose reports lead with a metric of their own, so a run shows two metrics."""

    name: ClassVar[str] = "distance_sphere"
    primary_metric: ClassVar[str | None] = "distance"

    @torch.no_grad()
    def evaluate(self, params: dict[str, torch.Tensor]) -> dict[str, float]:
        return {**super().evaluate(params), "distance": float(params["x"].norm())}


class Hooks:
    @hookimpl
    def optkit_register_objectives(self, register):  # type: ignore[no-untyped-def]
        register(Distance)


def test_one_figure_file_per_metric(tmp_path: Path, saved: list[Figure]) -> None:
    registry = Registry(load(extra_plugins=[("figure_test", Hooks())]))
    task = {
        "name": "two-metrics",
        "seeds": [0, 1],
        "budget": {"iterations": 5, "eval_every": 1},
        "objectives": [{"name": "sphere", "dim": 4}, {"name": "distance_sphere", "dim": 4}],
        "optimizers": [{"name": "adam", "lr": 0.1}],
    }
    out = tmp_path / "o"
    optkit.run(task, out, registry=registry)
    _, figure = report(out, x="grad_evals")
    pngs = sorted(p.name for p in out.glob("*-vs-*.png"))
    assert pngs == ["distance-vs-grad_evals.png", "gap-vs-grad_evals.png"]
    assert figure.name == "gap-vs-grad_evals.png"  # the first objective's metric
    markdown = (out / "report.md").read_text()
    assert "(gap-vs-grad_evals.png)" in markdown and "(distance-vs-grad_evals.png)" in markdown
    by_metric = {
        ax.get_ylabel(): [ax.get_title().split(":")[0] for ax in f.axes]
        for f in saved
        for ax in f.axes
    }
    assert by_metric == {"gap": ["sphere"], "distance": ["distance_sphere"]}
    assert len(saved) == 2  # one figure each, not two metrics in one file
    _, figure = report(out, metric="distance")
    assert figure.name == "distance-vs-sequential_steps.png"


def test_log_axis_ticks_are_readable(mixed: Path, saved: list[Figure]) -> None:
    found = panels(saved, mixed)
    for name in ("rosenbrock", "sphere"):
        ax = found[name]
        assert ax.get_yscale() == "log"
        ax.figure.canvas.draw()
        labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
        assert 2 <= len(labels) <= 16, labels
        assert all("$" not in t and "+" not in t for t in labels), labels  # no mathtext/e+NN
        assert not [t.get_text() for t in ax.yaxis.get_minorticklabels() if t.get_text()]

    from optkit.figures import tick_label

    values = (0.02, 1.0, 500.0, 2e4, 1e20, 3e-5)
    assert [tick_label(v) for v in values] == ["0.02", "1", "500", "2e4", "1e20", "3e-5"]


def test_tuning_searches_are_not_counted_as_measured_seeds(
    tmp_path: Path, saved: list[Figure]
) -> None:
    task = {
        "name": "tuned-figure",
        "seeds": [0, 1],
        "budget": {"iterations": 4, "eval_every": 1},
        "objective": {"name": "sphere", "dim": 4},
        "optimizers": [{"name": "adam", "lr": 0.1}],
        "tuning": {
            "hyperoptimizer": {"name": "random_search", "trials": 2},
            "space": {"lr": {"low": 1e-3, "high": 1.0, "log": True}},
            "score": "loss",
            "seeds": [1000],
        },
    }
    optkit.run(task, tmp_path / "o")
    assert any(r.get("phase") == "tuning" for r in load_rows(tmp_path / "o"))  # the premise
    sphere = panels(saved, tmp_path / "o")["sphere"]
    assert "band: min-max over 2 seeds" in legend_texts(sphere)
