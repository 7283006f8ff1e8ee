"""Issue 16, the run side: one writer per run directory, names that stay names, `check` that
knows what it can know, environment faults as one paragraph, progress and the API's words.

Each test names the fault it covers; `docs/reliability.md` maps the faults to these tests.
Faults of several processes (a second writer, a killed writer, a full disk, a missing package)
are tested with real subprocesses of `python -m optkit.cli`.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import optkit
from optkit.cli import main
from optkit.errors import ConfigError, ResultsError
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
ROOT = Path(__file__).resolve().parents[2]
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


# --------------------------------------------------------------------------------------------
# 2. Names are names
# --------------------------------------------------------------------------------------------

BAD_NAMES = ["../../../escaped", "/tmp/absolute", "a/b", "..", "a..b", "has space", "."]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_a_task_name_that_is_not_a_plain_name_fails_check(tmp_path: Path, bad: str) -> None:
    """Fault: `name = "../../../escaped"` (or an absolute path) wrote outside runs/."""
    task = write(tmp_path, TINY_TOML.replace('name = "tiny"', f"name = {json.dumps(bad)}"))
    assert main(["check", str(task)]) == 2
    assert main(["bench", str(task)]) == 2  # bench's default --out is runs/NAME


def test_a_bad_name_via_set_fails_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    task = write(tmp_path, TINY_TOML)
    for command in ("check", "run", "bench"):
        assert main([command, str(task), "--set", "name=../../escaped"]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert f"{task}: task 'name' '../../escaped' is not a plain name" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["task.toml"]
    assert not (tmp_path.parent / "escaped").exists()


@pytest.mark.parametrize("bad", ["../x", "/abs", "opt/imizer", "a..b"])
def test_an_optimizer_label_that_is_not_a_plain_name_fails_check(bad: str) -> None:
    task = {**TINY, "optimizer": {"name": "adam", "lr": 0.1, "label": bad}}
    with pytest.raises(ConfigError, match=r"optimizer: 'label' .* is not a plain name"):
        optkit.load_task(task)
    with pytest.raises(ConfigError, match="is not a plain name"):
        optkit.load_task(TINY, overrides=[f"optimizer.label={json.dumps(bad)}"])


def test_plain_names_with_dots_dashes_and_underscores_are_accepted() -> None:
    task = optkit.load_task({**TINY, "name": "v1.2_run-A"}, overrides=["optimizer.label='x.y_z-1'"])
    assert task.name == "v1.2_run-A" and task.optimizers[0].label == "x.y_z-1"


# --------------------------------------------------------------------------------------------
# 3. `check` checks everything it can know
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "optimizer",
    [
        '{ name = "adam", lr = -1 }',
        '{ name = "sgd", lr = 0.1, momentum = -0.5 }',
        '{ name = "optex", base = "adam", base_config = { lr = -1 }, parallelism = 2 }',
    ],
    ids=["adam", "sgd-momentum", "optex-base"],
)
def test_a_value_the_library_rejects_fails_check_and_run_writes_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    optimizer: str,
) -> None:
    """Fault: `adam lr = -1` passed `check`; `run` failed in every cell, exit 1, and left a
    run directory. torch.optim judges the value: `check` builds the optimizer's state."""
    monkeypatch.chdir(tmp_path)
    text = TINY_TOML.replace('optimizer = { name = "adam", lr = 0.1 }', f"optimizer = {optimizer}")
    task = write(tmp_path, text)
    assert main(["check", str(task)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    name = optimizer.split('"')[1]
    assert f"{task}: optimizer: optimizer '{name}' rejects its config: Invalid" in err
    assert main(["run", str(task)]) == 2
    assert main(["bench", str(task), "--out", str(tmp_path / "o")]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["task.toml"]


def test_a_plugin_s_own_config_error_names_the_task_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fault: errors raised inside a plugin's constructor did not say which file."""
    text = TINY_TOML.replace(
        'optimizer = { name = "adam", lr = 0.1 }',
        'optimizers = [ { name = "adam" }, { name = "data_parallel", base = "adam", parallelism = 0 } ]',
    )
    task = write(tmp_path, text)
    assert main(["check", str(task)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{task}: optimizers[1]: optimizer 'data_parallel': parallelism must be >= 1" in err


HYPER = '\nhyperoptimizer = { name = "random_search", trials = 2, space = { "optimizer.lr" = { low = 0.01, high = 0.1 } } }\n'


def test_a_score_the_objective_does_not_declare_fails_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fault: `score = "accuracy"` with a hyperoptimizer: every trial failed at run time."""
    task = write(tmp_path, TINY_TOML + 'score = "accuracy"' + HYPER)
    assert main(["check", str(task)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert (
        f"{task}: score 'accuracy' (used by hyperoptimizer 'random_search') is not a metric of"
        " objective 'sphere', which declares: gap, loss." in err
    )
    assert main(["check", str(write(tmp_path, TINY_TOML + 'score = "gap"' + HYPER))]) == 0


def test_a_score_nothing_uses_fails_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fault: `score` without a hyperoptimizer (or budget.target) was silently ignored."""
    task = write(tmp_path, TINY_TOML + 'score = "gap"\n')
    assert main(["check", str(task)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f'{task}: score = "gap" is given but nothing uses it' in err
    with_target = TINY_TOML.replace("iterations = 3 }", "iterations = 3, target = 0.1 }")
    assert main(["check", str(write(tmp_path, with_target + 'score = "gap"\n'))]) == 0


def test_the_objective_kit_catches_an_undeclared_metric() -> None:
    """`check` trusts metric_direction(); the kit makes every plugin keep that promise."""
    from optkit_synthetic.functions import Sphere

    from optkit.testing import check_objective

    class Undeclared(Sphere):
        def evaluate(self, params):  # type: ignore[no-untyped-def]
            return {**super().evaluate(params), "accuracy": 0.5}

    check_objective(Sphere(dim=3))
    with pytest.raises(AssertionError, match=r"reports \['accuracy'\] but metric_direction"):
        check_objective(Undeclared(dim=3))


def test_run_resume_without_out_is_an_error_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fault: `run --resume` without `--out` silently made a new timestamped directory."""
    monkeypatch.chdir(tmp_path)
    task = write(tmp_path, TINY_TOML)
    assert main(["run", str(task), "--resume"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert (
        "--resume finishes the missing cells of an existing run directory: name it with --out"
        in err
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["task.toml"]
    with pytest.raises(ConfigError) as caught:
        optkit.run(TINY, resume=True)
    assert "resume=True finishes" in str(caught.value) and "with out=" in str(caught.value)
    assert "--" not in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["task.toml"]


def test_api_errors_about_out_use_the_api_s_words(tmp_path: Path) -> None:
    out = tmp_path / "o"
    optkit.run(TINY, out=out)
    with pytest.raises(ResultsError) as caught:
        optkit.run(TINY, out=out)
    message = str(caught.value)
    assert f"out='{out}' already holds results of task 'tiny'. Pass resume=True" in message
    assert "--" not in message
    with pytest.raises(ConfigError, match=r"task 'tiny': overrides 'budget\.nope'"):
        optkit.load_task(TINY, overrides=["budget.nope"])


# --------------------------------------------------------------------------------------------
# 4. No traceback for an environment problem
# --------------------------------------------------------------------------------------------


def unwritable_place(tmp_path: Path) -> Path:
    """A directory this process may not create: under a read-only directory, or (for root,
    whom permissions do not stop) under /sys."""
    locked = tmp_path / "read-only"
    locked.mkdir()
    locked.chmod(0o555)
    target = locked / "out"
    if os.access(locked, os.W_OK):
        target = Path("/sys/optkit-reliability-test/out")
    try:
        target.mkdir(parents=True)
    except OSError:
        return target
    pytest.skip(f"this machine lets the test create {target}")


@pytest.mark.parametrize("where", ["read-only", "under-a-file"])
def test_an_unwritable_out_is_one_paragraph_exit_2(tmp_path: Path, where: str) -> None:
    """Fault: `--out` in a place that cannot be written gave a raw traceback, exit 1."""
    if where == "under-a-file":
        (tmp_path / "a-file").write_text("")
        out = tmp_path / "a-file" / "out"
    else:
        out = unwritable_place(tmp_path)
    done = cli("run", str(write(tmp_path, TINY_TOML)), "--out", str(out))
    assert done.returncode == 2
    message = one_paragraph(done.stderr)
    assert "optkit: error: cannot write" in message and str(out.parent) in message
    assert "--out" in message
    with pytest.raises(optkit.OptkitError, match="cannot write") as caught:
        optkit.run(TINY, out=out)
    assert "out=" in str(caught.value) and "--out" not in str(caught.value)


def test_a_full_disk_is_one_paragraph_exit_2(tmp_path: Path) -> None:
    """ENOSPC, for real: the file `--resume` rewrites goes to /dev/full."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    task, out = write(tmp_path, TINY_TOML), tmp_path / "out"
    assert cli("run", str(task), "--out", str(out)).returncode == 0
    (out / ".results.jsonl.tmp").symlink_to("/dev/full")
    done = cli("bench", str(task), "--out", str(out), "--resume")
    assert done.returncode == 2
    message = one_paragraph(done.stderr)
    assert f"cannot write {out / 'results.jsonl'}" in message or "/dev/full" in message
    assert "The disk (or your quota) is full: free some space" in message
    assert "--resume with the same --out" in message
    assert len(RunDirectory(out).rows()) > 0  # the finished rows are still there


def test_a_write_limit_hit_mid_run_stops_with_one_paragraph_and_resumes(tmp_path: Path) -> None:
    """A write that fails in the middle of a cell (here a real file size limit, EFBIG)
    stops the run with one paragraph, releases the lock, and --resume finishes."""
    task = write(
        tmp_path,
        TINY_TOML.replace("seeds = [0]", "seeds = [0, 1]").replace(
            "iterations = 3", "iterations = 600"
        ),
    )
    out = tmp_path / "out"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    done = cli("run", str(task), "--out", str(out), preexec_fn=limit)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    message = " ".join(done.stderr.split("optkit: error: ", 1)[1].split())
    assert f"cannot write {out / 'results.jsonl'} (File too large)" in message
    assert not (out / WRITER_FILE).exists(), "the lock was released"
    again = cli("run", str(task), "--out", str(out), "--resume")
    assert again.returncode == 0, again.stderr
    ends = [r for r in RunDirectory(out).rows() if r["event"] == "end"]
    assert sorted(r["seed"] for r in ends) == [0, 1]


def test_a_missing_optional_package_is_one_paragraph_exit_2(tmp_path: Path) -> None:
    """The RL plugin imports gymnasium late; without it `check` printed a traceback."""
    code = (
        "import sys; sys.modules['gymnasium'] = None\n"
        "from optkit.cli import main\n"
        f"raise SystemExit(main(['check', {str(ROOT / 'tasks' / 'dqn-cpu.toml')!r}]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=ENV
    )
    assert done.returncode == 2
    message = one_paragraph(done.stderr)
    assert "needs the Python package 'gymnasium', which is not installed" in message
    assert "pip install 'optkit[rl]'" in message


# --------------------------------------------------------------------------------------------
# 5. Progress and small things
# --------------------------------------------------------------------------------------------


def test_a_cell_start_line_and_an_eta(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    task = write(tmp_path, TINY_TOML.replace("seeds = [0]", "seeds = [0, 1]"))
    assert main(["run", str(task), "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err.splitlines()
    starts = [i for i, line in enumerate(err) if line.endswith(": start")]
    ends = [i for i, line in enumerate(err) if line.startswith("[") and "s)" in line]
    assert [err[i] for i in starts] == ["[1/2] sphere|adam|0: start", "[2/2] sphere|adam|1: start"]
    assert starts[0] < ends[0] < starts[1] < ends[1]


def test_the_eta_is_the_mean_cell_time_times_the_cells_left() -> None:
    from optkit.progress import MatrixProgress

    now = [0.0]
    lines: list[str] = []
    bar = MatrixProgress(4, lines.append, clock=lambda: now[0])
    bar.start(1, "c1")
    now[0] = 20.0
    bar.end(1, "c1", "ok", 20.0)
    now[0] = 21.0
    bar.end(2, "c2", "ok", 1.0)  # mean 10.5 s over 2 cells, 2 left: 21 s
    assert lines[0] == "[1/4] c1: start"
    assert lines[1].startswith("[1/4] c1: ok (20.0 s); 3 cells left, about 60 s (ETA ")
    assert lines[2].startswith("[2/4] c2: ok (1.0 s); 2 cells left, about 21 s (ETA ")
    short = MatrixProgress(2, lines.append, clock=lambda: 1.0)
    short.end(1, "c", "ok", 1.0)
    assert lines[-1] == "[1/2] c: ok (1.0 s)"  # a short run gets no ETA


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"optkit {optkit.__version__}"


def test_every_test_docs_reliability_names_exists() -> None:
    """docs/reliability.md maps each fault to a test; a renamed or deleted test breaks it."""
    text = (ROOT / "docs" / "reliability.md").read_text()
    refs = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", text)
    assert len(refs) >= 20
    missing = [
        f"{file}::{name}"
        for file, name in refs
        if not (ROOT / file).exists()
        or not re.search(rf"^def {name}\(", (ROOT / file).read_text(), re.MULTILINE)
    ]
    assert not missing, f"docs/reliability.md names tests that do not exist: {missing}"
