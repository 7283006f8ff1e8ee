"""Tuned task files end to end: the shipped quickstart (cut down) through the CLI, and a tuned
task whose searches and measured cells run on Ray giving the local run's rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from optkit.cli import main
from optkit.results import load_rows

TASKS = Path(__file__).resolve().parents[2] / "tasks"
SMALL = [
    "--set",
    "objective.dim=20",
    "--set",
    "budget.iterations=6",
    "--set",
    "seeds=[0]",
    "--set",
    "tuning.hyperoptimizer.trials=2",
    "--set",
    "tuning.budget={ iterations = 4 }",
]


def finals(out: Path) -> dict[tuple[str, int], float]:
    """(label, seed) -> final measured loss."""
    rows = load_rows(out)
    last: dict[tuple[str, int], float] = {}
    for row in rows:
        if row["event"] == "eval" and row["phase"] == "measure":
            last[(row["label"], row["seed"])] = row["loss"]
    return last


def test_the_tuned_quickstart_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "quick"
    assert main(["run", str(TASKS / "quickstart.toml"), "--out", str(out), *SMALL]) == 0
    tuning = json.loads((out / "tuning.json").read_text())
    labels = set(tuning["objectives"]["rosenbrock"])
    assert labels == {"adam", "optex-N5", "target-N5", "data_parallel-N5"}
    assert tuning["objectives"]["rosenbrock"]["optex-N5"]["resolved"].keys() == {"base_config.lr"}
    assert set(finals(out)) == {(label, 0) for label in labels}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["task"]["target"] == {"reference": "adam", "metric": "loss"}


@pytest.mark.ray
@pytest.mark.slow
def test_searches_and_measured_cells_on_ray_match_the_local_run(tmp_path: Path) -> None:
    ray: Any = pytest.importorskip("ray", reason="extra 'ray' not installed")
    task = TASKS / "quickstart.toml"
    small = [*SMALL, "--set", "seeds=[0, 1]"]
    assert main(["run", str(task), "--out", str(tmp_path / "local"), *small]) == 0
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        args = ["run", str(task), "--out", str(tmp_path / "ray"), "--executor", "ray", *small]
        assert main(args) == 0
    finally:
        if started:
            ray.shutdown()
    local = json.loads((tmp_path / "local" / "tuning.json").read_text())
    remote = json.loads((tmp_path / "ray" / "tuning.json").read_text())
    assert remote == local
    assert finals(tmp_path / "ray") == pytest.approx(finals(tmp_path / "local"), rel=1e-5)
