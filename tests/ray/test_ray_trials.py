"""`--launcher ray` spreads a [tuning] phase's trials, one Ray task each, over the cluster:
the same trials, scores and choices as `local`, and `--resume` reruns no finished trial."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from optkit.results import load_rows
from optkit.runner import quiet, run_task
from optkit.tasks import load_task

pytestmark = pytest.mark.ray

TASK: dict[str, Any] = {
    "name": "ray-trials",
    "seeds": [0],
    "budget": {"iterations": 6},
    "objective": {"name": "rosenbrock", "dim": 4, "init_low": -2.0, "init_high": 2.0},
    "optimizers": [
        {"name": "adam", "lr": 0.01},
        {
            "name": "data_parallel",
            "base": "adam",
            "base_config": {"lr": 0.01},
            "parallelism": 2,
            "label": "dp",
        },
        {"name": "sgd", "lr": 0.001},  # its first trial diverges (lr 0.037)
    ],
    "tuning": {
        "hyperoptimizer": {"name": "random_search", "trials": 4},
        "space": {"lr": {"low": 1e-5, "high": 0.1, "log": True}},
        "score": "loss",
        "seeds": [100],
        "budget": {"iterations": 5},
    },
    "target": {"reference": "adam", "metric": "loss"},
}


def trials(out: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """The ``[tuning]`` trial rows by (label, trial number)."""
    rows = load_rows(out)
    return {
        (r["label"], r["trial"]): r
        for r in rows
        if r["event"] == "trial" and r["phase"] == "tuning"
    }


def tuning_json(out: Path) -> dict[str, Any]:
    return json.loads((out / "tuning.json").read_text())


def measured(out: Path) -> dict[str, float]:
    return {r["cell"]: r["loss"] for r in load_rows(out) if r["event"] == "end" and "loss" in r}


@pytest.fixture(scope="module")
def runs(ray_session: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("trials")
    out = {}
    for launcher in ("local", "ray"):
        summary = run_task(load_task(TASK), base / launcher, launcher=launcher, progress=quiet)
        assert not summary.cells_failed and not summary.cells_skipped
        out[launcher] = summary.out
    return out


def test_ray_gives_the_trials_scores_and_choices_of_local(runs: dict[str, Path]) -> None:
    local, remote = trials(runs["local"]), trials(runs["ray"])
    labels = ("adam", "dp", "sgd")
    assert sorted(local) == sorted(remote) == [(m, i) for m in labels for i in range(4)]
    for key, row in local.items():
        assert remote[key]["trial_config"] == row["trial_config"]
        assert remote[key]["score"] == row["score"]
        assert remote[key]["status"] == row["status"] and remote[key]["error"] == row["error"]
    # a failed trial on a Ray worker is recorded as such, and its search goes on
    statuses = {key: row["status"] for key, row in remote.items()}
    assert statuses.pop(("sgd", 0)) == "diverged" and set(statuses.values()) == {"ok"}
    assert "non-finite loss" in remote[("sgd", 0)]["error"]
    assert tuning_json(runs["ray"]) == tuning_json(runs["local"])
    assert measured(runs["ray"]) == measured(runs["local"])


def test_each_trial_ran_in_its_own_ray_task(runs: dict[str, Path]) -> None:
    """Not the whole search in one task: every trial row names its own Ray task, and none
    ran in this (the driver's) process."""
    here = os.getpid()
    local = trials(runs["local"])
    assert {r["trial_pid"] for r in local.values()} == {here}
    assert not any("ray_task" in r for r in local.values())
    remote = trials(runs["ray"])
    assert here not in {r["trial_pid"] for r in remote.values()}
    tasks = [r["ray_task"] for r in remote.values()]
    assert len(set(tasks)) == len(tasks) == 12 and all(tasks)
    assert all(r["ray_node"] for r in remote.values())
    searches = [r for r in load_rows(runs["ray"]) if r["event"] == "end" and r["phase"] == "tuning"]
    assert len(searches) == 3 and not any("ray_task" in r for r in searches)  # in the driver


def test_resume_on_ray_reruns_no_finished_trial(runs: dict[str, Path], tmp_path: Path) -> None:
    """A run killed while adam's search had finished trials 0 and 2 (a batch ends in any
    order): on resume only its trials 1 and 3 run, then the other searches and the measured
    cells."""
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / "manifest.json").write_text((runs["ray"] / "manifest.json").read_text())
    kept = [r for (m, i), r in trials(runs["ray"]).items() if m == "adam" and i in (0, 2)]
    kept = [{**r, "trial_pid": -1} for r in kept]  # as no worker could have written it
    (killed / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    run_task(load_task(TASK), killed, resume=True, launcher="ray", progress=quiet)
    rows = [r for r in load_rows(killed) if r["event"] == "trial"]
    assert len(rows) == 12  # no trial twice
    resumed = trials(killed)
    assert sorted(resumed) == sorted(trials(runs["ray"]))
    assert [resumed[("adam", i)]["trial_pid"] for i in (0, 2)] == [-1, -1]
    assert all(resumed[("adam", i)]["trial_pid"] > 0 for i in (1, 3))
    for key, row in trials(runs["local"]).items():
        assert resumed[key]["score"] == row["score"]
    assert tuning_json(killed) == tuning_json(runs["local"])


HYPER_TASK: dict[str, Any] = {  # as tests/core/test_tuning_hyper.py: a trial is a whole cell
    "name": "ray-trials-hyper",
    "seeds": [0],
    "budget": {"iterations": 8},
    "objective": {"name": "rosenbrock", "dim": 4},
    "optimizer": {"name": "sgd", "lr": 1e-4},
    "hyperoptimizers": [
        {
            "name": "random_search",
            "trials": 2,
            "space": {"optimizer.momentum": {"low": 0.0, "high": 0.9}},
            "label": "rs2",
        },
    ],
    "tuning": {
        "hyperoptimizer": {"name": "random_search", "trials": 3},
        "space": {"lr": {"low": 1e-5, "high": 6e-5, "log": True}},
        "score": "best_score",
        "seeds": [100],
        "budget": {"iterations": 6},
    },
}


def test_a_trial_that_is_a_whole_hyperoptimizer_cell_is_one_ray_task(
    ray_session: Any, tmp_path: Path
) -> None:
    out = {
        launcher: run_task(
            load_task(HYPER_TASK), tmp_path / launcher, launcher=launcher, progress=quiet
        ).out
        for launcher in ("local", "ray")
    }
    local, remote = trials(out["local"]), trials(out["ray"])
    assert sorted(local) == sorted(remote) == [("rs2:sgd", i) for i in range(3)]
    for key, row in local.items():
        assert (remote[key]["trial_config"], remote[key]["score"], remote[key]["status"]) == (
            row["trial_config"],
            row["score"],
            "ok",
        )
    assert len({r["ray_task"] for r in remote.values()}) == 3
    assert tuning_json(out["ray"]) == tuning_json(out["local"])
