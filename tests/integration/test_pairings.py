"""Any pairing from one task file: the CPU-sized matrix across every kind of objective."""

from __future__ import annotations

from pathlib import Path

import optkit
from optkit.report import report
from optkit.results import RunDirectory

TASKS = Path(__file__).resolve().parents[2] / "tasks"


def test_the_pairings_matrix_runs_every_cell(tmp_path: Path) -> None:
    summary = optkit.run(TASKS / "pairings-cpu.toml", tmp_path / "out")
    assert summary.cells_failed == [] and summary.cells_skipped == []
    rows = RunDirectory(tmp_path / "out").rows()
    ends = {r["cell"] for r in rows if r["event"] == "end" and r["status"] == "ok"}
    objectives = {"synthetic:rosenbrock", "vision:mnist", "rl:cartpole", "text:shakespeare"}
    optimizers = {"adam", "optex", "data_parallel"}
    assert ends == {f"{o}|{p}|0" for o in objectives for p in optimizers}
    last = {r["cell"]: r for r in rows if r["event"] == "eval"}
    for objective in objectives:
        assert last[f"{objective}|optex|0"]["grad_evals"] == 3 * 4  # N = 3, 4 rounds
        assert last[f"{objective}|optex|0"]["sequential_steps"] == 4
        assert last[f"{objective}|adam|0"]["grad_evals"] == 4
    table, figure = report(tmp_path / "out")
    assert "| vision:mnist | optex | 1 | 0 | test_error |" in table  # declared primary metric
    assert "| rl:cartpole | adam | 1 | 0 | reward |" in table
    assert "| synthetic:rosenbrock | adam | 1 | 0 | gap |" in table
    assert figure.exists()


def test_a_hyperoptimizer_over_an_inner_pairing(tmp_path: Path) -> None:
    summary = optkit.run(TASKS / "pairings-hpo-cpu.toml", tmp_path / "out")
    assert summary.cells_failed == []
    rows = RunDirectory(tmp_path / "out").rows()
    trials = [r for r in rows if r["event"] == "trial"]
    assert len(trials) == 3
    lrs = [t["trial_config"]["optimizer.base_config.lr"] for t in trials]
    assert all(1e-4 <= lr <= 1e-1 for lr in lrs) and len(set(lrs)) == 3
    end = next(r for r in rows if r["event"] == "end")
    assert end["best_score"] == min(t["score"] for t in trials)
