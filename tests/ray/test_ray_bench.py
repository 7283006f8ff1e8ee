"""`optkit bench --launcher ray`: whole cells on Ray, rows streamed, --resume unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from optkit.cli import main
from optkit.results import RunDirectory

TASK = """
name = "ray-bench"
seeds = [0, 1]
budget = { iterations = 10, eval_every = 5 }
objective = { name = "sphere", dim = 50, noise = 0.5 }
optimizers = [ { name = "adam", lr = 0.1 }, { name = "sgd", lr = 0.05 } ]
"""


def finals(out: Path) -> dict[str, float]:
    rows = RunDirectory(out).rows()
    return {r["cell"]: r["loss"] for r in rows if r["event"] == "end"}


def test_bench_on_ray_matches_local_and_resumes(ray_session: Any, tmp_path: Path) -> None:
    task = tmp_path / "task.toml"
    task.write_text(TASK)
    assert main(["bench", str(task), "--out", str(tmp_path / "local")]) == 0
    assert main(["bench", str(task), "--out", str(tmp_path / "ray"), "--launcher", "ray"]) == 0
    local, remote = finals(tmp_path / "local"), finals(tmp_path / "ray")
    assert len(local) == 4 and local == remote  # same seeds, same numbers, wherever they ran

    # drop one finished cell (as if the run had been killed during it), resume on Ray
    rows_path = tmp_path / "ray" / "results.jsonl"
    rows = [json.loads(x) for x in rows_path.read_text().splitlines()]
    victim = "sphere|sgd|1"
    rows_path.write_text("".join(json.dumps(r) + "\n" for r in rows if r["cell"] != victim))
    args = ["bench", str(task), "--out", str(tmp_path / "ray"), "--launcher", "ray", "--resume"]
    assert main(args) == 0
    after = RunDirectory(tmp_path / "ray").rows()
    assert [r["cell"] for r in after if r["event"] == "end"].count(victim) == 1
    assert finals(tmp_path / "ray") == local
