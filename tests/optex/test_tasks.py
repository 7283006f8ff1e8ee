"""The OptEx task files: all parse and check; a CPU-sized one runs end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

import optkit
from optkit.results import load_rows
from optkit.tasks import check_task, load_task

TASKS = Path(__file__).resolve().parents[2] / "tasks"
NAMES = ["ackley", "sphere", "rosenbrock", "ackley-hd"]


@pytest.mark.parametrize("name", [*NAMES, *(f"{n}-cpu" for n in NAMES)])
def test_task_files_validate(name: str) -> None:
    task = load_task(TASKS / f"optex-{name}.toml")
    report = check_task(task)
    assert not report.skipped
    labels = {spec.label for spec in task.optimizers}
    assert labels == {"vanilla", "optex-N5", "target-N5", "data_parallel-N5"}
    assert len(task.seeds) == (2 if name.endswith("-cpu") else 5)


def test_sphere_cpu_task_runs_and_optex_needs_fewer_sequential_steps(tmp_path: Path) -> None:
    summary = optkit.run(
        TASKS / "optex-sphere-cpu.toml", out=tmp_path / "run", overrides=["seeds=[0]"]
    )
    assert summary.cells_run == 4 and not summary.cells_failed
    rows = [r for r in load_rows(summary.out) if r.get("event") == "eval"]

    def gaps(label: str) -> list[float]:
        return [r["gap"] for r in sorted(rows, key=lambda r: r["iteration"]) if r["label"] == label]

    goal = gaps("vanilla")[-1]  # vanilla's 20-iteration optimality gap
    hits = {
        lab: next((i for i, g in enumerate(gaps(lab)) if g <= goal), 99)
        for lab in ("optex-N5", "target-N5", "data_parallel-N5")
    }
    assert hits["target-N5"] == 4
    assert hits["optex-N5"] <= 6
    assert hits["data_parallel-N5"] == 20  # exact gradients: averaging N copies changes nothing
    last = [r for r in rows if r["label"] == "optex-N5"][-1]
    assert (last["sequential_steps"], last["grad_evals"]) == (20, 100)
