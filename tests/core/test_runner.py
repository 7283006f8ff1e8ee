"""The runner: failing cells, divergence, kill-and-resume, hyperoptimizer cells."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import optkit
from optkit import HyperContext, HyperOptimizer, HyperResult, hookimpl
from optkit.plugins import load
from optkit.registry import Registry
from optkit.results import RunDirectory

TASK = {
    "name": "runner-task",
    "seeds": [0, 1],
    "budget": {"iterations": 15, "eval_every": 5},
    "objective": {"name": "rosenbrock", "dim": 10, "init_low": -2.0, "init_high": 2.0},
    "optimizers": [
        {"name": "adam", "lr": 0.05},
        {"name": "sgd", "lr": 10.0, "label": "sgd-too-large"},  # diverges to inf/NaN
    ],
}


def rows_of(out: Path) -> list[dict[str, Any]]:
    return RunDirectory(out).rows()


def test_a_diverging_cell_is_recorded_and_the_matrix_goes_on(tmp_path: Path) -> None:
    summary = optkit.run(TASK, tmp_path / "o")
    assert sorted(summary.cells_failed) == [
        "rosenbrock|sgd-too-large|0",
        "rosenbrock|sgd-too-large|1",
    ]
    rows = rows_of(tmp_path / "o")
    errors = [r for r in rows if r["event"] == "error"]
    assert len(errors) == 2 and all(r["status"] == "diverged" for r in errors)
    assert all("non-finite" in r["error"] for r in errors)
    ends = {r["cell"]: r["status"] for r in rows if r["event"] == "end"}
    assert ends["rosenbrock|adam|0"] == "ok" and ends["rosenbrock|adam|1"] == "ok"
    for line in (tmp_path / "o" / "results.jsonl").read_text().splitlines():
        json.loads(line)  # strict JSON: NaN is written as null


def test_budget_target_and_time_stop_a_cell_early(tmp_path: Path) -> None:
    task = {**TASK, "optimizers": [TASK["optimizers"][0]], "seeds": [0]}
    task["budget"] = {"iterations": 500, "eval_every": 1, "target": 100.0}
    optkit.run(task, tmp_path / "o")
    evals = [r for r in rows_of(tmp_path / "o") if r["event"] == "eval"]
    assert evals[-1]["loss"] <= 100.0 < evals[-2]["loss"]
    assert evals[-1]["iteration"] < 500


def test_resume_after_a_partial_line_finishes_only_missing_cells(tmp_path: Path) -> None:
    task = {**TASK, "optimizers": [TASK["optimizers"][0]], "seeds": [0, 1, 2]}
    out = tmp_path / "o"
    optkit.run(task, out)
    full = rows_of(out)
    # Simulate a run killed during cell 3: drop its rows and leave a half-written line.
    kept = [r for r in full if r["cell"] != "rosenbrock|adam|2"] + [
        r for r in full if r["cell"] == "rosenbrock|adam|2"
    ][:2]
    text = "".join(json.dumps(r) + "\n" for r in kept) + '{"task": "runner-ta'
    (out / "results.jsonl").write_text(text)
    assert len(RunDirectory(out).rows()) == len(kept)  # the partial line is ignored
    summary = optkit.run(task, out, resume=True)
    assert summary.cells_run == 1 and summary.cells_resumed == 2
    again = rows_of(out)
    assert len(again) == len(full)
    ends = [r["cell"] for r in again if r["event"] == "end"]
    assert sorted(ends) == sorted({r["cell"] for r in full})
    last_full = [r for r in full if r["cell"] == "rosenbrock|adam|2"][-2]
    last_again = [r for r in again if r["cell"] == "rosenbrock|adam|2"][-2]
    assert last_full["loss"] == last_again["loss"]  # same seed, same result


def test_a_killed_bench_leaves_whole_rows_and_resumes(tmp_path: Path) -> None:
    task = tmp_path / "slow.toml"
    task.write_text(
        'name = "slow"\nseeds = [0, 1, 2, 3, 4, 5]\n'
        "budget = { iterations = 400, eval_every = 1 }\n"
        'objective = { name = "ackley", dim = 20000 }\noptimizer = { name = "adam", lr = 0.01 }\n'
    )
    out = tmp_path / "o"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "optkit.cli", "bench", str(task), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.time() + 90
    while time.time() < deadline:
        rows = (out / "results.jsonl").read_text() if (out / "results.jsonl").exists() else ""
        if '"event": "end"' in rows:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run = RunDirectory(out)
    done = run.completed_cells()
    assert 1 <= len(done) < 6, "the kill should land mid-matrix"
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"
    summary = optkit.run(task, out, resume=True)
    assert summary.cells_resumed == len(done) and summary.cells_run == 6 - len(done)
    rows = run.rows()
    assert len([r for r in rows if r["event"] == "end"]) == 6
    per_cell = [r for r in rows if r["cell"] == "ackley|adam|5" and r["event"] == "eval"]
    assert [r["iteration"] for r in per_cell] == list(range(401))


class GridLR(HyperOptimizer):
    """Tries a fixed list of learning rates (a minimal black-box hyperoptimizer for tests)."""

    name = "test_grid_lr"
    summary = "test"

    def __init__(self, *, values: list[float]) -> None:
        self.values = values

    def optimize(self, context: HyperContext) -> HyperResult:
        done = {c.config["optimizer.lr"]: c for c in context.completed}
        trials = [done.get(v) or context.run_trial({"optimizer.lr": v}) for v in self.values]
        ok = [t for t in trials if not math.isnan(t.score)]
        best = min(ok, key=lambda t: t.score)
        return HyperResult(best.config, best.score, trials)


def test_hyperoptimizer_cells_record_every_trial(tmp_path: Path) -> None:
    class Hooks:
        @hookimpl
        def optkit_register_hyperoptimizers(self, register):  # type: ignore[no-untyped-def]
            register(GridLR)

    registry = Registry(load(extra_plugins=[("grid", Hooks())]))
    task = {
        **TASK,
        "optimizers": [{"name": "sgd", "lr": 1e-6}],
        "seeds": [0],
        "hyperoptimizer": {"name": "test_grid_lr", "values": [1e-6, 1e-4, 10.0]},
    }
    summary = optkit.run(task, tmp_path / "o", registry=registry)
    assert summary.cells_failed == []
    rows = rows_of(tmp_path / "o")
    trials = [r for r in rows if r["event"] == "trial"]
    assert [t["trial_config"]["optimizer.lr"] for t in trials] == [1e-6, 1e-4, 10.0]
    assert trials[2]["score"] is None and "non-finite" in trials[2]["error"]
    end = next(r for r in rows if r["event"] == "end")
    assert end["best_config"] == {"optimizer.lr": 1e-4}
    assert end["best_score"] == pytest.approx(trials[1]["score"])
    bad = {**task, "hyperoptimizer": {"name": "test_grid_lr", "values": [0.1]}}
    bad["optimizers"] = [{"name": "adam", "lr": 0.05}]

    # an override of a key the inner optimizer does not have fails the trial, clearly
    class BadKey(GridLR):
        name = "test_bad_key"

        def optimize(self, context: HyperContext) -> HyperResult:
            trial = context.run_trial({"optimizer.learning_rate": 0.1})
            return HyperResult(trial.config, trial.score, [trial])

    class Hooks2:
        @hookimpl
        def optkit_register_hyperoptimizers(self, register):  # type: ignore[no-untyped-def]
            register(BadKey)

    registry2 = Registry(load(extra_plugins=[("bad", Hooks2())]))
    bad["hyperoptimizer"] = {"name": "test_bad_key", "values": [0.1]}
    optkit.run(bad, tmp_path / "o2", registry=registry2)
    trial = next(r for r in rows_of(tmp_path / "o2") if r["event"] == "trial")
    assert "unknown key 'learning_rate'" in trial["error"]
