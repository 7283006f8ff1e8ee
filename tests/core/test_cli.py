"""The command line: exit codes, one-paragraph errors, nothing half-written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from optkit.cli import main

TASK = """
name = "cli-task"
seeds = [0, 1]
budget = { iterations = 20, eval_every = 5 }
objective = { name = "rosenbrock", dim = 20, init_low = -2.0, init_high = 2.0 }
optimizers = [ { name = "adam", lr = 0.05 }, { name = "sgd", lr = 1e-5, momentum = 0.9 } ]
executor = { name = "vmap" }
"""


def flat(text: str) -> str:
    """Error paragraphs are wrapped for the terminal; compare them with spaces normalized."""
    return " ".join(text.split())


def write(tmp_path: Path, text: str, name: str = "task.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_run_writes_results_table_and_figure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["run", str(write(tmp_path, TASK)), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| rosenbrock | adam | 2 | 0 | gap |" in printed
    assert {p.name for p in out.iterdir()} >= {
        "manifest.json",
        "results.jsonl",
        "results.csv",
        "report.md",
        "gap-vs-sequential_steps.png",
    }
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["resolved"]["seeds"] == [0, 1]
    assert manifest["versions"]["torch"] and manifest["hardware"]["cpu_count"]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["event"] == "eval"]
    assert len(evals) == 2 * 2 * 5  # 2 optimizers x 2 seeds x (iteration 0 + 4 evaluations)
    last = [r for r in evals if r["cell"] == "rosenbrock|adam|1"][-1]
    assert last["iteration"] == 20 and last["sequential_steps"] == 20 and last["grad_evals"] == 20
    assert last["loss"] < next(r for r in evals if r["cell"] == "rosenbrock|adam|1")["loss"]
    for key in ("objective", "optimizer", "label", "seed", "wall_s", "gap", "minibatch_loss"):
        assert key in last
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert header[:6] == ["task", "cell", "objective", "optimizer", "label", "seed"]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("this is = = not toml", "not valid TOML"),
        (
            TASK.replace('name = "adam"', 'name = "adamm"'),
            "unknown optimizer 'adamm'. Did you mean 'adam'",
        ),
        (TASK.replace("iterations = 20", "iterations = 0"), "must be an integer > 0"),
        (TASK.replace("dim = 20", "dim = 2.5"), "key 'dim' of objective 'rosenbrock' must be int"),
    ],
)
def test_bad_input_exits_2_with_one_paragraph_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, match: str
) -> None:
    out = tmp_path / "out"
    assert main(["run", str(write(tmp_path, text)), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("optkit: error: ") and match in flat(err)
    assert "Traceback" not in err
    assert not out.exists()


def test_out_dir_of_another_task_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["bench", str(write(tmp_path, TASK)), "--out", str(out)]) == 0
    before = (out / "results.jsonl").read_bytes()
    other = write(tmp_path, TASK.replace("cli-task", "other-task"), "other.toml")
    assert main(["bench", str(other), "--out", str(out)]) == 2
    assert "holds the results of task 'cli-task'" in flat(capsys.readouterr().err)
    assert main(["bench", str(write(tmp_path, TASK)), "--out", str(out)]) == 2
    assert "--resume" in flat(capsys.readouterr().err)
    assert (out / "results.jsonl").read_bytes() == before


def test_set_overrides_and_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, TASK)
    assert main(["check", str(path), "--set", "seeds=[3]"]) == 0
    assert "2 runnable cells" in capsys.readouterr().out
    assert main(["check", str(path), "--set", "budget.iterations"]) == 2
    assert "expected KEY=VALUE" in flat(capsys.readouterr().err)


def test_report_command_and_x_axis(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["bench", str(write(tmp_path, TASK)), "--out", str(out)]) == 0
    assert main(["report", str(out), "--x", "grad_evals", "--metric", "loss"]) == 0
    assert (out / "loss-vs-grad_evals.png").stat().st_size > 1000
    assert main(["report", str(out), "--metric", "accuracy"]) == 2
    assert "metric 'accuracy' is not in these results" in flat(capsys.readouterr().err)


def test_plugins_json_lists_sources(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    adam = next(p for p in payload["plugins"] if p["name"] == "adam")
    assert adam["kind"] == "optimizer" and adam["distribution"] == "optkit" and adam["version"]
    assert payload["failed"] == []


def test_the_installed_executable_runs(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "optkit.cli",
            "run",
            str(write(tmp_path, TASK.replace("x = 1", ""))),
            "--out",
            str(tmp_path / "o"),
            "--set",
            "seeds=[0]",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "[1/2] rosenbrock|adam|0" in done.stderr  # progress goes to stderr


@pytest.mark.parametrize("unbuffered", ["1", ""])
def test_a_closed_pipe_ends_the_listing_quietly(
    unbuffered: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`optkit plugins | head -1`: the reader goes away; no traceback, the shell's 141. With
    stdout buffered (the usual case for a pipe) the listing fits the buffer and the broken
    pipe shows only when it is flushed; unbuffered, at the first print."""
    monkeypatch.setenv("PYTHONUNBUFFERED", unbuffered)
    proc = subprocess.Popen(
        [sys.executable, "-m", "optkit.cli", "plugins"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the first write: the listing's print meets a broken pipe
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
