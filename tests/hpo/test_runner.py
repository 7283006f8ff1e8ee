"""The hyperoptimizers through the real task runner: trial rows, and resume of a killed run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from optkit.results import load_rows
from optkit.runner import quiet, run_task
from optkit.tasks import load_task

TASK: dict[str, Any] = {
    "name": "hpo-runner-test",
    "seeds": [0],
    "budget": {"iterations": 10, "eval_every": 10},
    "objective": {"name": "sphere", "dim": 5},
    "optimizer": {"name": "adam", "betas": [0.9, 0.999]},
    "hyperoptimizer": {
        "name": "random_search",
        "trials": 5,
        "space": {
            "optimizer.lr": {"low": 1e-3, "high": 1.0, "log": True},
            "optimizer.betas.0": {"low": 0.5, "high": 0.99},
        },
    },
}


def trial_rows(out: Path) -> list[dict[str, Any]]:
    return [r for r in load_rows(out / "results.jsonl") if r.get("event") == "trial"]


def test_runner_records_every_trial_and_resumes_a_killed_run(tmp_path: Path) -> None:
    full = tmp_path / "full"
    run_task(load_task(TASK), full, progress=quiet)
    rows = trial_rows(full)
    assert [r["trial"] for r in rows] == list(range(5))
    assert all(set(r["trial_config"]) == {"optimizer.lr", "optimizer.betas.0"} for r in rows)
    end = next(r for r in load_rows(full / "results.jsonl") if r.get("event") == "end")
    assert end["best_score"] == min(r["score"] for r in rows)

    # a run killed after two trials: only their rows are on disk
    killed = tmp_path / "killed"
    run_task(load_task(TASK), killed, progress=quiet)
    lines = (killed / "results.jsonl").read_text().splitlines()
    kept = [line for line in lines if json.loads(line).get("trial") in (0, 1)]
    kept = [line for line in kept if json.loads(line).get("event") == "trial"]
    (killed / "results.jsonl").write_text("\n".join(kept) + "\n")
    run_task(load_task(TASK), killed, resume=True, progress=quiet)
    resumed = trial_rows(killed)
    assert [r["trial_config"] for r in resumed] == [r["trial_config"] for r in rows]
    end = next(r for r in load_rows(killed / "results.jsonl") if r.get("event") == "end")
    assert end["trials_resumed"] == 2 and end["trials"] == 5
