"""The ``processes`` launcher: cells and tuning trials in spawned workers, the local rows bit
for bit, a dead worker a clear error with the finished cells kept."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from optkit.cli import main
from optkit.errors import ConfigError, EnvironmentProblem
from optkit.interfaces import CellBatch
from optkit.process_launcher import ProcessLauncher
from optkit.results import RunDirectory
from optkit.runner import run_task
from optkit.tasks import validate_task

TUNED = {
    "name": "processes",
    "seeds": [0, 1],
    "budget": {"iterations": 6, "eval_every": 2},
    "objective": {"name": "sphere", "dim": 5, "noise": 0.3},
    "optimizers": [
        {"name": "adam", "lr": 0.1},
        {"name": "optex", "base": "adam", "base_config": {"lr": 0.1}, "parallelism": 3},
    ],
    "tuning": {
        "hyperoptimizer": {"name": "random_search", "trials": 3},
        "space": {"lr": {"low": 0.01, "high": 0.5, "log": True}},
        "score": "loss",
        "seeds": [1000],
    },
    "target": {"reference": "adam", "metric": "loss"},
}


def quiet(message: str) -> None:
    """No progress lines."""


def rows(out: Path) -> list[dict[str, Any]]:
    return RunDirectory(out).rows()


def numbers(out: Path) -> dict[tuple[Any, ...], Any]:
    """Every row's loss and score by (cell, event, iteration, trial): what must not move."""
    return {
        (r["cell"], r["event"], r.get("iteration"), r.get("trial")): (r.get("loss"), r.get("score"))
        for r in rows(out)
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("processes")
    task = validate_task(TUNED, "processes.toml")
    out = {}
    for name, launcher in (("local", "local"), ("processes", {"name": "processes", "jobs": 2})):
        summary = run_task(task, base / name, launcher=launcher, progress=quiet)
        assert summary.cells_failed == [] and summary.cells_run == 2 + 4
        out[name] = summary.out
    return out


def test_processes_give_the_local_rows_bit_for_bit(runs: dict[str, Path]) -> None:
    local, spread = numbers(runs["local"]), numbers(runs["processes"])
    assert len(local) > 20 and local == spread
    tuning = [json.loads((runs[n] / "tuning.json").read_text()) for n in ("local", "processes")]
    assert tuning[0] == tuning[1]
    assert json.loads((runs["processes"] / "manifest.json").read_text())["status"] == "complete"


def test_trials_and_cells_ran_in_worker_processes(runs: dict[str, Path]) -> None:
    here = os.getpid()
    local = {r["trial_pid"] for r in rows(runs["local"]) if r["event"] == "trial"}
    spread = {r["trial_pid"] for r in rows(runs["processes"]) if r["event"] == "trial"}
    assert local == {here}
    assert here not in spread and 1 <= len(spread) <= 2


def test_the_cli_jobs_flag_picks_the_launcher(tmp_path: Path) -> None:
    task = tmp_path / "t.toml"
    task.write_text(
        'name = "cli-jobs"\nseeds = [0, 1]\nbudget = { iterations = 3 }\n'
        'objective = { name = "sphere", dim = 3 }\noptimizer = { name = "sgd", lr = 0.1 }\n'
    )
    assert main(["bench", str(task), "--out", str(tmp_path / "a")]) == 0
    assert main(["bench", str(task), "--out", str(tmp_path / "b"), "--jobs", "2"]) == 0
    assert numbers(tmp_path / "a") == numbers(tmp_path / "b")
    code = main(
        ["bench", str(task), "--out", str(tmp_path / "c"), "--jobs", "2", "--launcher", "local"]
    )
    assert code == 2 and not (tmp_path / "c").exists()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"jobs": 0}, "jobs must be >= 1, got 0"),
        ({"jobs": "4"}, "jobs must be a whole number >= 1, got '4'"),
        ({"threads_per_job": 1.5}, "threads_per_job must be a whole number >= 1, got 1.5"),
    ],
)
def test_bad_config_is_refused_naming_the_key(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=f"launcher 'processes': {message}"):
        ProcessLauncher(**config)


def dies_on_the_second(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """A cell runner (module level, so a spawned worker imports it) whose second cell kills
    its worker, as an out-of-memory kill or a crash in native code does."""
    if payload["cell"] == "second":
        os._exit(3)
    return [{"cell": payload["cell"], "event": "end", "status": "ok"}]


class Cell:
    def __init__(self, key: str) -> None:
        self.key = key


def test_a_dead_worker_is_a_clear_error_and_finished_cells_are_kept() -> None:
    delivered: list[list[dict[str, Any]]] = []
    batch = CellBatch(
        cells=[Cell("first"), Cell("second")],
        run_here=lambda cell: (True, "unused"),
        payload=lambda cell: {"cell": cell.key},
        run_payload=dies_on_the_second,
        deliver=delivered.append,
        progress=quiet,
    )
    launcher = ProcessLauncher(jobs=1)
    try:
        with pytest.raises(EnvironmentProblem, match=r"worker process died while running second"):
            launcher.launch(batch)
    finally:
        launcher.close()
    assert delivered == [[{"cell": "first", "event": "end", "status": "ok"}]]


def children(pid: int) -> set[int]:
    """The child processes of ``pid`` (Linux ``/proc``)."""
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        text = (task / "children").read_text() if (task / "children").exists() else ""
        out.update(int(p) for p in text.split())
    return out


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc (Linux)")
def test_an_interrupt_records_no_failure_ends_the_workers_and_resume_finishes(
    tmp_path: Path,
) -> None:
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) while tuning trials
    run in workers: the driver exits 130 at once, no trial is recorded as failed, no worker
    is left running, and ``--resume`` gives the rows of a run never interrupted."""
    import signal
    import subprocess
    import sys
    import time

    task = tmp_path / "t.toml"
    task.write_text(
        'name = "interrupted"\nseeds = [0]\nbudget = { iterations = 1500, eval_every = 500 }\n'
        'objective = { name = "sphere", dim = 20, noise = 0.1 }\n'
        'optimizers = [{ name = "adam", lr = 0.1 }, { name = "sgd", lr = 0.1 }]\n'
        '[tuning]\nhyperoptimizer = { name = "random_search", trials = 3 }\n'
        'space = { lr = { low = 0.001, high = 0.3, log = true } }\nscore = "loss"\n'
        "seeds = [1000]\n"
    )
    out = tmp_path / "run"
    command = [sys.executable, "-m", "optkit.cli", "bench", str(task), "--out", str(out)]
    child = subprocess.Popen(
        [*command, "--jobs", "2"],
        start_new_session=True,
        # a shell's background job starts with SIGINT ignored (CI may run the suite so), and
        # Python then installs no KeyboardInterrupt handler: give the driver a terminal's
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    workers: set[int] = set()
    while len(workers) < 2:  # workers (and multiprocessing's resource tracker) started
        assert child.poll() is None and time.monotonic() < deadline, child.stderr
        workers = children(child.pid)
        time.sleep(0.02)
    time.sleep(0.5)  # the workers import torch: the first trials are running or queued
    os.killpg(child.pid, signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    kept = rows(out) if (out / "results.jsonl").exists() else []
    assert not [r for r in kept if r.get("status") == "failed"], kept
    assert len([r for r in kept if r["event"] == "trial"]) < 6  # interrupted mid-tuning
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers):
        assert time.monotonic() < deadline, [p for p in workers if alive(p)]
        time.sleep(0.05)
    assert main(["bench", str(task), "--out", str(out), "--resume", "--jobs", "2"]) == 0
    assert main(["bench", str(task), "--out", str(tmp_path / "whole")]) == 0
    assert numbers(out) == numbers(tmp_path / "whole")
