"""The workload task files: all validate; the CPU-sized variants run end to end."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import optkit
from optkit.results import load_rows
from optkit.tasks import check_task, load_task

TASKS = Path(__file__).resolve().parents[2] / "tasks"
STUDIES = {
    "dqn": 3,
    "cifar10": 5,
    "fashion-mnist-cnn": 5,
    "shakespeare": 3,
}  # study -> seeds in the paper
LABELS = {"vanilla", "optex-N4", "target-N4", "data_parallel-N4"}


@pytest.mark.parametrize("name", [*STUDIES, *(f"{n}-cpu" for n in STUDIES)])
def test_task_files_validate(name: str) -> None:
    task = load_task(TASKS / f"{name}.toml")
    report = check_task(task)
    assert not report.skipped
    assert {spec.label for spec in task.optimizers} == LABELS
    assert len(task.seeds) == STUDIES[name.removesuffix("-cpu")]
    for spec in task.optimizers:
        if spec.label != "vanilla":
            assert spec.spec()["parallelism"] == 4
    if name == "dqn":
        envs = {spec.spec()["env"] for spec in task.objectives}
        assert envs == {"CartPole-v1", "Acrobot-v1", "MountainCar-v0", "Pendulum-v1"}


@pytest.mark.parametrize(
    ("name", "metrics"),
    [
        ("dqn-cpu", {"reward", "episodes", "env_steps", "loss"}),
        ("fashion-mnist-cnn-cpu", {"loss", "test_error", "train_loss"}),
        ("shakespeare-cpu", {"loss", "train_loss", "heldout_loss"}),
    ],
)
def test_cpu_task_runs(tmp_path: Path, name: str, metrics: set[str]) -> None:
    summary = optkit.run(TASKS / f"{name}.toml", out=tmp_path / name, overrides=["seeds=[0]"])
    assert summary.cells_run == 4 and not summary.cells_failed
    rows = [r for r in load_rows(summary.out) if r.get("event") == "eval"]
    task = load_task(TASKS / f"{name}.toml")
    iterations = task.budget.iterations
    for label in LABELS:
        mine = sorted((r for r in rows if r["label"] == label), key=lambda r: r["iteration"])
        assert metrics <= set(mine[-1])
        assert all(math.isfinite(r["loss"]) for r in mine)
        last = mine[-1]
        per_round = 1 if label == "vanilla" else 4
        assert last["sequential_steps"] == iterations
        assert last["grad_evals"] >= per_round * iterations
    vanilla = sorted((r for r in rows if r["label"] == "vanilla"), key=lambda r: r["iteration"])
    if name != "dqn-cpu":  # supervised: the held-out / training loss falls within the budget
        assert vanilla[-1]["loss"] < vanilla[0]["loss"]
    else:  # DQN: one environment step per gradient evaluation, after the warm-up
        assert vanilla[-1]["env_steps"] == 100 + iterations
