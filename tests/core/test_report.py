"""Report: per-objective metric, steps to the reference's final value, any numeric x axis."""

from __future__ import annotations

from pathlib import Path

import optkit
from optkit.report import report

TASK = {
    "name": "report-task",
    "seeds": [0, 1],
    "budget": {"iterations": 30, "eval_every": 1},
    "objective": {"name": "sphere", "dim": 20},
    "optimizers": [
        {"name": "adam", "lr": 0.05, "label": "slow"},
        {"name": "adam", "lr": 0.2, "label": "fast"},
    ],
}


def test_steps_to_reference_are_paired_by_seed(tmp_path: Path) -> None:
    optkit.run(TASK, tmp_path / "o")
    table, figure = report(tmp_path / "o", x="wall_s")
    lines = {line.split("|")[2].strip(): line.split("|") for line in table.splitlines()[2:]}
    assert float(lines["slow"][8]) == 30.0  # the reference reaches its own final at the end
    assert float(lines["fast"][8]) < 30.0
    assert figure.name == "gap-vs-wall_s.png"


def test_reference_that_is_never_reached_is_reported(tmp_path: Path) -> None:
    task = {**TASK, "optimizers": list(reversed(TASK["optimizers"]))}
    optkit.run(task, tmp_path / "o")
    table, _ = report(tmp_path / "o", metric="loss")
    slow = next(line for line in table.splitlines() if "| slow |" in line)
    assert "never (2/2)" in slow
