"""Issue 16, the run side: one writer per run directory, names that stay names, `check` that
knows what it can know, environment faults as one paragraph, progress and the API's words.

Each test names the fault it covers; `docs/reliability.md` maps the faults to these tests.
Faults of several processes (a second writer, a killed writer, a full disk, a missing package)
are tested with real subprocesses of `python -m optkit.cli`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import optkit
from optkit.errors import ResultsError
from optkit.results import RunDirectory
from optkit.runlock import LOCK_FILE, WRITER_FILE, RunLock

TINY = {
    "name": "tiny",
    "seeds": [0],
    "budget": {"iterations": 3},
    "objective": {"name": "sphere", "dim": 4},
    "optimizer": {"name": "adam", "lr": 0.1},
}
TINY_TOML = (
    'name = "tiny"\nseeds = [0]\nbudget = { iterations = 3 }\n'
    'objective = { name = "sphere", dim = 4 }\noptimizer = { name = "adam", lr = 0.1 }\n'
)
# long enough that a second process starts, checks and exits while this one still runs
SLOW_TOML = (
    'name = "slow"\nseeds = [0, 1, 2, 3, 4, 5]\n'
    "budget = { iterations = 3000, eval_every = 1 }\n"
    'objective = { name = "ackley", dim = 20000 }\noptimizer = { name = "adam", lr = 0.01 }\n'
)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


def write(tmp_path: Path, text: str, name: str = "task.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def cli(*args: str, cwd: Path | None = None, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """`python -m optkit.cli ARGS` in a real subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "optkit.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
        cwd=cwd,
        **kwargs,
    )


def one_paragraph(err: str) -> str:
    """The CLI's error paragraph, unwrapped; fails on a traceback."""
    assert "Traceback" not in err, err
    assert err.startswith("optkit: error: "), err
    return " ".join(err.split())


def start_and_wait_for_lock(task: Path, out: Path) -> subprocess.Popen[bytes]:
    """Start `optkit bench` and return once it holds the lock of `out` and has written rows."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "optkit.cli", "bench", str(task), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        rows = out / "results.jsonl"
        if (out / WRITER_FILE).exists() and rows.exists() and rows.stat().st_size > 0:
            return proc
        assert proc.poll() is None, "the first bench ended before it held the lock"
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the first bench never took the lock")


# --------------------------------------------------------------------------------------------
# 1. A run directory has one writer
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("resume", [[], ["--resume"]], ids=["plain", "resume"])
def test_a_second_bench_on_the_same_out_exits_2_naming_the_holder(
    tmp_path: Path, resume: list[str]
) -> None:
    """Fault: two `optkit bench` on the same --out at once both ran (duplicated rows)."""
    task, out = write(tmp_path, SLOW_TOML), tmp_path / "out"
    first = start_and_wait_for_lock(task, out)
    try:
        second = cli("bench", str(task), "--out", str(out), *resume)
        assert first.poll() is None, "the first bench must still hold the lock"
        rows_when_refused = RunDirectory(out).rows()
    finally:
        first.kill()
        first.wait()
    assert second.returncode == 2
    assert second.stdout == ""
    message = one_paragraph(second.stderr)
    assert f"pid {first.pid} on host {socket.gethostname()}" in message
    assert f"--out {out} is being written by another optkit process" in message
    evals = [(r["cell"], r["iteration"]) for r in rows_when_refused if r["event"] == "eval"]
    assert len(evals) == len(set(evals)), "eval rows were duplicated"
    assert not [r for r in rows_when_refused if r["event"] == "end" and r["seed"] != 0]


def test_a_killed_writer_s_lock_is_taken_over_with_a_note(tmp_path: Path) -> None:
    """Fault: a lock left by a killed process (same host, pid gone) must not block --resume."""
    task = write(tmp_path, SLOW_TOML.replace("iterations = 3000", "iterations = 300"), "slow.toml")
    out = tmp_path / "out"
    first = start_and_wait_for_lock(task, out)
    first.send_signal(signal.SIGKILL)
    first.wait()
    record = json.loads((out / WRITER_FILE).read_text())
    assert record["pid"] == first.pid  # the killed writer's record is still there
    again = cli("bench", str(task), "--out", str(out), "--resume")
    assert again.returncode == 0, again.stderr
    assert "optkit: note:" in again.stderr and "Traceback" not in again.stderr
    note = " ".join(again.stderr.split())
    assert f"taking over the run directory from pid {first.pid} on host" in note
    assert "which is no longer running" in note
    assert not (out / WRITER_FILE).exists(), "a finished writer removes its record"
    ends = [r for r in RunDirectory(out).rows() if r["event"] == "end"]
    assert len(ends) == 6


def test_a_stale_record_in_an_empty_directory_does_not_block_a_new_run(tmp_path: Path) -> None:
    """A writer killed before its manifest leaves only lock files: the directory is still free."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_FILE).write_text("")
    stale = {"pid": dead.pid, "host": socket.gethostname(), "started": "x", "command": "y"}
    (out / WRITER_FILE).write_text(json.dumps(stale))
    done = cli("run", str(write(tmp_path, TINY_TOML)), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert f"from pid {dead.pid} on host {socket.gethostname()}" in " ".join(done.stderr.split())
    assert len([r for r in RunDirectory(out).rows() if r["event"] == "end"]) == 1


def test_the_api_is_refused_in_its_own_words_while_another_writer_holds_out(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with RunLock(out):
        with pytest.raises(ResultsError) as caught:
            optkit.run(TINY, out=out)
    message = str(caught.value)
    assert f"out='{out}' is being written by another optkit process: pid {os.getpid()}" in message
    assert "--out" not in message and "resume=True" in message
    assert not (out / "manifest.json").exists()
    optkit.run(TINY, out=out)  # released: the directory is usable again
