"""The [tuning] and [target] sections: check-time errors, key aliases, the tuning phase
through the real runner (choices, phases, tuning.json, resume) and the remote-cell payloads."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from optkit import cli
from optkit.registry import get_registry
from optkit.results import load_rows
from optkit.runner import quiet, run_cell_payload, run_task
from optkit.tasks import load_task
from optkit.tuning import cell_from_payload, cell_payload, tuned_cell, tuning_cells
from optkit.tuning_spec import resolve_key

TASK: dict[str, Any] = {
    "name": "tuning-test",
    "seeds": [0, 1],
    "budget": {"iterations": 8, "eval_every": 4},
    "objective": {"name": "rosenbrock", "dim": 4},
    "optimizers": [
        {"name": "adam", "lr": 0.01},
        {
            "name": "data_parallel",
            "base": "adam",
            "base_config": {"lr": 0.01},
            "parallelism": 2,
            "label": "dp",
        },
    ],
    "tuning": {
        "hyperoptimizer": {"name": "random_search", "trials": 2},
        "space": {"lr": {"low": 1e-3, "high": 0.3, "log": True}},
        "score": "loss",
        "seeds": [100],
        "budget": {"iterations": 6},
    },
    "target": {"reference": "adam", "metric": "loss"},
}


LR = {"low": 1e-3, "high": 0.3, "log": True}


def task_with(**changes: Any) -> dict[str, Any]:
    """TASK with top-level keys replaced and ``"tuning.x"`` / ``"target.x"`` keys set
    (value ``None`` deletes the key)."""
    raw = copy.deepcopy(TASK)
    for key, value in changes.items():
        node, _, leaf = key.rpartition("__")
        table = raw[node] if node else raw
        if value is None:
            table.pop(leaf, None)
        else:
            table[leaf] = value
    return raw


def write_toml(path: Path, raw: dict[str, Any]) -> Path:
    """A task dict as a TOML file (inline tables only: enough for these tasks)."""

    def value(v: Any) -> str:
        if isinstance(v, dict):
            return "{ " + ", ".join(f'"{k}" = {value(x)}' for k, x in v.items()) + " }"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        return repr(v)

    path.write_text("".join(f"{k} = {value(v)}\n" for k, v in raw.items()))
    return path


def rows_of(out: Path) -> list[dict[str, Any]]:
    return load_rows(out)


def final_loss(rows: list[dict[str, Any]], label: str, seed: int) -> float:
    evals = [
        r
        for r in rows
        if r["event"] == "eval"
        and r["label"] == label
        and r["seed"] == seed
        and r["phase"] == "measure"
    ]
    return float(evals[-1]["loss"])


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tuned") / "run"
    summary = run_task(load_task(TASK), out, progress=quiet)
    assert not summary.cells_failed and not summary.cells_skipped
    return out


def test_plain_keys_map_through_each_optimizers_aliases() -> None:
    registry = get_registry()
    assert resolve_key("lr", registry.get("optimizer", "adam")) == "optimizer.lr"
    for wrapper in ("optex", "data_parallel", "target"):
        cls = registry.get("optimizer", wrapper)
        assert resolve_key("lr", cls) == "optimizer.base_config.lr"
        assert resolve_key("betas.0", cls) == "optimizer.base_config.betas.0"
        assert resolve_key("optimizer.parallelism", cls) == "optimizer.parallelism"
    assert resolve_key("objective.batch_size", cls) == "objective.batch_size"


def test_every_optimizer_gets_the_same_trials_and_is_measured_with_its_choice(
    tuned_run: Path,
) -> None:
    rows = rows_of(tuned_run)
    assert {r["phase"] for r in rows} == {"tuning", "measure"}
    trials = [r for r in rows if r["event"] == "trial"]
    assert all(r["phase"] == "tuning" for r in trials)
    assert all(r["cell"].endswith("|tuning") for r in rows if r["phase"] == "tuning")
    by_label = {label: [r for r in trials if r["label"] == label] for label in ("adam", "dp")}
    # the same search seed: both optimizers try the same plain configurations, in order
    assert [r["trial"] for r in by_label["adam"]] == [0, 1]
    assert [r["trial_config"] for r in by_label["adam"]] == [
        r["trial_config"] for r in by_label["dp"]
    ]
    assert by_label["dp"][0]["trial_overrides"] == {
        "optimizer.base_config.lr": by_label["dp"][0]["trial_config"]["lr"]
    }
    assert all(r["tuning_seeds"] == [100] and r["seed"] == 100 for r in trials)

    tuning = json.loads((tuned_run / "tuning.json").read_text())
    assert tuning["seeds"] == [100] and tuning["budget"]["iterations"] == 6
    assert tuning["hyperoptimizer"] == {"name": "random_search", "trials": 2}
    for label, key in (("adam", "lr"), ("dp", "base_config.lr")):
        record = tuning["objectives"]["rosenbrock"][label]
        best = min(by_label[label], key=lambda r: r["score"])
        assert record["chosen"] == best["trial_config"]
        assert record["resolved"] == {key: best["trial_config"]["lr"]}
        assert record["score"] == pytest.approx(best["loss"])
        assert record["direction"] == "min" and record["score_metric"] == "loss"
        assert [t["config"] for t in record["trials"]] == [
            r["trial_config"] for r in by_label[label]
        ]
        assert all(t["status"] == "ok" for t in record["trials"])

    # the measured rows are exactly an untuned run at the chosen learning rates
    chosen = {
        label: tuning["objectives"]["rosenbrock"][label]["chosen"]["lr"] for label in ("adam", "dp")
    }
    plain = copy.deepcopy(TASK)
    del plain["tuning"], plain["target"]
    plain["optimizers"][0]["lr"] = chosen["adam"]
    plain["optimizers"][1]["base_config"]["lr"] = chosen["dp"]
    reference = run_task(load_task(plain), tuned_run.parent / "plain", progress=quiet).out
    for label in ("adam", "dp"):
        for seed in (0, 1):
            assert final_loss(rows_of(tuned_run), label, seed) == final_loss(
                rows_of(reference), label, seed
            )
    assert all(r["phase"] == "measure" for r in rows_of(reference))


def test_resume_keeps_finished_trials(tuned_run: Path, tmp_path: Path) -> None:
    """A run killed after the first trial of the first search: the kept trial is not run
    again (its score, edited here to a sentinel, decides the choice)."""
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / "manifest.json").write_text((tuned_run / "manifest.json").read_text())
    rows = rows_of(tuned_run)
    first = next(r for r in rows if r["event"] == "trial" and r["label"] == "adam")
    other = next(
        r for r in rows if r["event"] == "trial" and r["label"] == "adam" and r["trial"] == 1
    )
    if first["score"] < other["score"]:  # make the kept trial the *worse* one, then best
        first, other = other, first
    kept = {**first, "trial": 0, "score": -1.0}
    (killed / "results.jsonl").write_text(json.dumps(kept) + "\n")
    run_task(load_task(TASK), killed, resume=True, progress=quiet)
    resumed = rows_of(killed)
    trials = [r for r in resumed if r["event"] == "trial" and r["label"] == "adam"]
    assert len(trials) == 2 and trials[0] == kept
    assert trials[1]["trial_config"] == other["trial_config"]
    end = next(r for r in resumed if r["event"] == "end" and r["cell"] == "rosenbrock|adam|tuning")
    assert end["trials_resumed"] == 1 and end["best_config"] == kept["trial_config"]
    tuning = json.loads((killed / "tuning.json").read_text())
    assert tuning["objectives"]["rosenbrock"]["adam"]["chosen"] == kept["trial_config"]

    # resuming a finished run runs nothing and keeps the choices
    before = (killed / "results.jsonl").read_text()
    summary = run_task(load_task(TASK), killed, resume=True, progress=quiet)
    assert summary.cells_run == 0 and (killed / "results.jsonl").read_text() == before
    assert json.loads((killed / "tuning.json").read_text()) == tuning


def test_searches_and_tuned_cells_travel_as_remote_payloads(tmp_path: Path) -> None:
    """The Ray distribution sends plain payloads: a search and a tuned measured cell must be
    rebuilt from them exactly (the worker runs ``run_cell_payload``)."""
    task = load_task(TASK)
    search = tuning_cells(task, task.cells())[1]
    payload = {"task": task.raw, "source": task.source, "cell": search.key, "previous": []}
    rows = run_cell_payload({**payload, **cell_payload(search)})
    assert rows[-1]["event"] == "end" and rows[-1]["status"] == "ok"
    assert {r["phase"] for r in rows} == {"tuning"}
    assert [r["trial"] for r in rows if r["event"] == "trial"] == [0, 1]

    cell = tuned_cell(task.cells()[2], {"optimizer.base_config.lr": 0.05})
    assert cell.optimizer.config["base_config"] == {"lr": 0.05}
    again = cell_from_payload(task, {"cell": cell.key, **cell_payload(cell)})
    assert again == cell and again.optimizer.config == cell.optimizer.config
    assert cell_from_payload(task, {"cell": search.key}) == search


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"tuning__score": "val_loss"}, "tuning.score"),
        ({"target__metric": "accuracy"}, "target.metric"),
        ({"tuning__seeds": [1, 100]}, "tuning.seeds"),
        ({"tuning__space": {"momentum": {"low": 0.0, "high": 0.9}}}, "momentum"),
        (
            {
                "optimizers": [
                    {"name": "sgd", "lr": 0.01},
                    {"name": "data_parallel", "base": "adam", "parallelism": 2},
                ],
                "target": {"reference": "sgd", "metric": "loss"},
                "tuning__space": {"momentum": {"low": 0.0, "high": 0.9}},
            },
            "momentum",
        ),
        ({"tuning__space": {"objective.dimm": {"low": 2, "high": 4}}}, "objective.dimm"),
        ({"target__reference": "sgd"}, "target.reference"),
        ({"target__value": 0.5}, "target.value"),
        ({"target__reference": None}, "target.reference"),
        ({"tuning__bogus": 1}, "tuning.bogus"),
        ({"tuning__budget": {"eval_every": 2}}, "tuning.budget.eval_every"),
        ({"tuning__hyperoptimizer": {"name": "random_search", "trails": 2}}, "trails"),
        ({"tuning__hyperoptimizer": {"name": "nope"}}, "tuning.hyperoptimizer: unknown"),
        ({"tuning__space": {"lr": {"low": 0.3, "high": 0.001}}}, "[tuning] (hyperoptimizer"),
        (  # [tuning] with hyperoptimizer cells scores what their end rows report
            {"hyperoptimizer": {"name": "random_search", "space": {"optimizer.lr": LR}}},
            "Valid: best_score",
        ),
    ],
)
def test_check_rejects_bad_sections_with_exit_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], changes: dict[str, Any], named: str
) -> None:
    path = write_toml(tmp_path / "task.toml", task_with(**changes))
    assert cli.main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert named in err.replace("\n", " ") and "Traceback" not in err
    out = tmp_path / "out"
    assert cli.main(["run", str(path), "--out", str(out)]) == 2
    assert not out.exists()


def test_the_valid_task_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_toml(tmp_path / "task.toml", TASK)
    assert cli.main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "4 runnable cells" in out
    assert "tuning: 2 searches" in out and "= 4 trial runs" in out
    value = write_toml(tmp_path / "v.toml", task_with(target={"metric": "loss", "value": 0.1}))
    assert cli.main(["check", str(value)]) == 0


def test_an_optimizer_whose_every_trial_diverges_is_not_measured(tmp_path: Path) -> None:
    raw = task_with(
        optimizers=[{"name": "adam", "lr": 0.01}, {"name": "sgd", "lr": 0.01}],
        tuning__space={"lr": {"low": 100.0, "high": 1000.0, "log": True}},
    )
    summary = run_task(load_task(raw), tmp_path / "run", progress=quiet)
    assert summary.cells_failed == ["rosenbrock|sgd|tuning"]
    skipped = dict(summary.cells_skipped)
    assert set(skipped) == {"rosenbrock|sgd|0", "rosenbrock|sgd|1"}
    assert all("tuning failed" in reason for reason in skipped.values())
    record = json.loads((tmp_path / "run" / "tuning.json").read_text())["objectives"]["rosenbrock"]
    assert record["sgd"]["status"] == "failed" and record["sgd"]["chosen"] is None
    assert {t["status"] for t in record["sgd"]["trials"]} == {"diverged"}
    assert record["adam"]["status"] == "ok"
    measured = {r["label"] for r in rows_of(tmp_path / "run") if r["phase"] == "measure"}
    assert measured == {"adam"}
