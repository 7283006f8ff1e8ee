"""[tuning] in a task whose cells are hyperoptimizer cells: each (objective, hyperoptimizer,
optimizer) label tuned the same way, a trial being one whole hyperoptimizer cell; the measured
hyperoptimizer cells use each label's choice. Real components (Rosenbrock, SGD, random search),
tiny sizes; the Flexora version on the real SmolLM2 is tests/flexora/test_tuning_hyper.py."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from optkit_hpo.random_search import RandomSearch

from optkit import cli, hookimpl
from optkit.checking import check_task
from optkit.comparisons import compare
from optkit.errors import ConfigError
from optkit.interfaces import HyperContext, HyperResult, Requirement
from optkit.plugins import load
from optkit.registry import Registry
from optkit.results import load_rows
from optkit.runner import quiet, run_task
from optkit.tasks import load_task
from optkit.tuning import cell_from_payload, cell_payload, tuned_cell, tuning_cells

from .test_tuning import write_toml

INNER = {"optimizer.momentum": {"low": 0.0, "high": 0.9}}
TASK: dict[str, Any] = {
    "name": "tuning-hyper-test",
    "seeds": [0, 1],
    "budget": {"iterations": 8, "eval_every": 4},
    "objective": {"name": "rosenbrock", "dim": 4},
    "optimizer": {"name": "sgd", "lr": 1e-4},
    # two hyperoptimizer labels: each inner search chooses the momentum, [tuning] the lr
    "hyperoptimizers": [
        {"name": "random_search", "trials": 2, "space": INNER, "label": "rs2"},
        {"name": "random_search", "trials": 3, "space": INNER, "label": "rs3"},
    ],
    "tuning": {
        "hyperoptimizer": {"name": "random_search", "trials": 3},
        "space": {"lr": {"low": 1e-5, "high": 6e-5, "log": True}},
        "score": "best_score",
        "seeds": [100, 101],
        "budget": {"iterations": 6},
    },
    "target": {"reference": "rs2:sgd", "metric": "best_score"},
}
LABELS = ("rs2:sgd", "rs3:sgd")


def task_with(**changes: Any) -> dict[str, Any]:
    """TASK with ``"section__key"`` keys set (value ``None`` deletes the key)."""
    raw = copy.deepcopy(TASK)
    for key, value in changes.items():
        node, _, leaf = key.rpartition("__")
        table = raw[node] if node else raw
        if value is None:
            table.pop(leaf, None)
        else:
            table[leaf] = value
    return raw


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tuned-hyper") / "run"
    summary = run_task(load_task(TASK), out, progress=quiet)
    assert not summary.cells_failed and not summary.cells_skipped
    return out


def tuning_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["phase"] == "tuning"]


def ends(rows: list[dict[str, Any]], phase: str) -> dict[str, dict[str, Any]]:
    return {r["cell"]: r for r in rows if r["event"] == "end" and r["phase"] == phase}


def test_each_hyperoptimizer_label_is_tuned_the_same_way(tuned_run: Path) -> None:
    rows = load_rows(tuned_run)
    trials = {
        label: [r for r in tuning_rows(rows) if r["event"] == "trial" and r["label"] == label]
        for label in LABELS
    }
    for label, mine in trials.items():
        assert [r["trial"] for r in mine] == [0, 1, 2]
        assert {r["phase"] for r in mine} == {"tuning"}
        assert all(r["tuning_seeds"] == [100, 101] and r["status"] == "ok" for r in mine)
        assert all(r["cell"] == f"rosenbrock|{label}|tuning" for r in mine)
    # the same random-search plan (seed tuning.seeds[0]) for every label
    configs = [[r["trial_config"] for r in trials[label]] for label in LABELS]
    assert configs[0] == configs[1] and all(set(c) == {"lr"} for c in configs[0])
    # a trial is scored on the inner cell's end-row value, averaged over the tuning seeds
    assert all(r["score"] == pytest.approx(r["best_score"]) for r in trials["rs2:sgd"])
    # the inner cells' own rows are not kept: only trial and end rows in the tuning phase
    assert {r["event"] for r in rows if r["phase"] == "tuning"} == {"trial", "end"}


def test_measured_hyper_cells_use_each_labels_choice(tuned_run: Path) -> None:
    rows = load_rows(tuned_run)
    tuning = json.loads((tuned_run / "tuning.json").read_text())
    record = tuning["objectives"]["rosenbrock"]
    assert set(record) == set(LABELS)
    assert record["rs2:sgd"]["hyperoptimizer"] == "rs2" and record["rs2:sgd"]["optimizer"] == "sgd"
    measured = ends(rows, "measure")
    assert set(measured) == {f"rosenbrock|{label}|{seed}" for label in LABELS for seed in (0, 1)}
    for cell, end in measured.items():
        label = end["label"]
        chosen = record[label]["chosen"]["lr"]
        best = min(t["score"] for t in record[label]["trials"])
        assert record[label]["score"] == best
        assert end["status"] == "ok" and end["optimizer_spec"]["lr"] == chosen, cell

    # the chosen lr, given by hand to an untuned run, reproduces the measured cell exactly
    untuned = task_with(tuning=None, target=None, seeds=[1])
    untuned["optimizer"] = {"name": "sgd", "lr": record["rs3:sgd"]["chosen"]["lr"]}
    again = run_task(load_task(untuned), tuned_run.parent / "untuned", progress=quiet)
    assert not again.cells_failed
    by_hand = ends(load_rows(again.out), "measure")["rosenbrock|rs3:sgd|1"]
    assert by_hand["best_score"] == measured["rosenbrock|rs3:sgd|1"]["best_score"]


def test_target_and_report_read_the_measured_hyper_cells(tuned_run: Path) -> None:
    comparison = compare(tuned_run)
    rows = {r.label: r for r in comparison.rows}
    assert set(rows) == set(LABELS)
    assert rows["rs2:sgd"].tuned == {
        "lr": json.loads((tuned_run / "tuning.json").read_text())["objectives"]["rosenbrock"][
            "rs2:sgd"
        ]["chosen"]["lr"]
    }
    measured = ends(load_rows(tuned_run), "measure")
    finals = [measured[f"rosenbrock|rs3:sgd|{s}"]["best_score"] for s in (0, 1)]
    assert rows["rs3:sgd"].final.mean == pytest.approx(sum(finals) / 2)
    # the reference reaches its own target on every seed
    assert rows["rs2:sgd"].steps_to_target.reached == 2


def test_resume_keeps_finished_trials(tuned_run: Path, tmp_path: Path) -> None:
    """Interrupted in the second label's search after its first trial: the first search and
    that trial are kept, not run again; the rest runs and the choices are the same."""
    rows = load_rows(tuned_run)
    cut = next(
        i
        for i, r in enumerate(rows)
        if r["event"] == "trial" and r["cell"] == "rosenbrock|rs3:sgd|tuning" and r["trial"] == 1
    )
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / "manifest.json").write_text((tuned_run / "manifest.json").read_text())
    (killed / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:cut]))
    summary = run_task(load_task(TASK), killed, resume=True, progress=quiet)
    assert summary.cells_run == 1 + 4  # the unfinished search, then the measured cells
    resumed = load_rows(killed)
    assert resumed[:cut] == rows[:cut]
    trials = [r for r in tuning_rows(resumed) if r["event"] == "trial" and r["label"] == "rs3:sgd"]
    assert [r["trial"] for r in trials] == [0, 1, 2]
    end = ends(resumed, "tuning")["rosenbrock|rs3:sgd|tuning"]
    assert end["trials_resumed"] == 1
    before = json.loads((tuned_run / "tuning.json").read_text())["objectives"]
    after = json.loads((killed / "tuning.json").read_text())["objectives"]
    assert after["rosenbrock"]["rs3:sgd"]["chosen"] == before["rosenbrock"]["rs3:sgd"]["chosen"]


def test_check_prints_the_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_toml(tmp_path / "task.toml", TASK)
    assert cli.main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "4 runnable cells" in out
    assert "2 searches (objective x hyperoptimizer x optimizer) x 3 trials x 2 seeds" in out
    assert "= 12 trial runs" in out and "before the 4 measured cells" in out


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"tuning__score": "loss"}, "'tuning.score' = 'loss' is not a value that the cells of"),
        ({"tuning__score": "loss"}, "Valid: best_score"),
        ({"target__metric": "gap"}, "'target.metric' = 'gap'"),
        ({"tuning__seeds": [1, 100]}, "tuning.seeds"),
        ({"target__reference": "sgd"}, "'<hyperoptimizer label>:<optimizer label>'; valid:"),
        ({"target__reference": "rs9:sgd"}, "valid: rs2:sgd, rs3:sgd"),
        ({"target__reference": "rs2:adam"}, "is not a label of this task's optimizers"),
    ],
)
def test_check_rejects_bad_sections(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], changes: dict[str, Any], named: str
) -> None:
    path = write_toml(tmp_path / "task.toml", task_with(**changes))
    assert cli.main(["check", str(path)]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert named in err and "Traceback" not in err
    out = tmp_path / "out"
    assert cli.main(["run", str(path), "--out", str(out)]) == 2
    assert not out.exists()


def test_a_reference_naming_a_hyper_cell_needs_hyperoptimizers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = task_with(hyperoptimizers=None, tuning__score="loss", target__metric="loss")
    raw["target"]["reference"] = "rs2:sgd"
    path = write_toml(tmp_path / "task.toml", raw)
    assert cli.main(["check", str(path)]) == 2
    assert "has no hyperoptimizers" in capsys.readouterr().err.replace("\n", " ")


def test_hyper_searches_and_tuned_hyper_cells_travel_as_remote_payloads() -> None:
    """The Ray launcher rebuilds cells from plain payloads: a hyperoptimizer label's search
    and its tuned measured cell must come back with their hyperoptimizer."""
    task = load_task(TASK)
    searches = tuning_cells(task, task.cells())
    assert [s.key for s in searches] == ["rosenbrock|rs2:sgd|tuning", "rosenbrock|rs3:sgd|tuning"]
    assert cell_from_payload(task, {"cell": searches[1].key}) == searches[1]
    assert searches[1].hyperoptimizer is not None and searches[1].hyperoptimizer.label == "rs3"
    cell = tuned_cell(task.cells()[3], {"optimizer.lr": 3e-5})
    again = cell_from_payload(task, {"cell": cell.key, **cell_payload(cell)})
    assert again == cell and again.optimizer.config["lr"] == 3e-5
    assert again.hyperoptimizer is not None and again.hyperoptimizer.label == "rs3"


class _Negated(RandomSearch):
    """Real random search that also reports ``neg_best`` (= -best_score, to maximise) and
    declares it: the declaration path of :func:`optkit.runner.hyper_cell.reported_metrics`."""

    name = "negated_random_search"

    def optimize(self, context: HyperContext) -> HyperResult:
        result = super().optimize(context)
        return dataclasses.replace(result, extras={**result.extras, "neg_best": -result.best_score})

    def reported_metrics(self) -> dict[str, str]:
        return {"neg_best": "max"}


@pytest.fixture
def negated_registry() -> Registry:
    class Hooks:
        @hookimpl
        def optkit_register_hyperoptimizers(self, register):  # type: ignore[no-untyped-def]
            register(_Negated)

    return Registry(load(extra_plugins=[("negated", Hooks())]))


def test_a_declared_metric_to_maximise_is_a_valid_score_and_is_negated(
    negated_registry: Registry, tmp_path: Path
) -> None:
    hypers = [{**h, "name": "negated_random_search"} for h in TASK["hyperoptimizers"]]
    raw = task_with(hyperoptimizers=hypers, target=None, seeds=[0])
    choices = {}
    for score in ("best_score", "neg_best"):
        raw["tuning"]["score"] = score
        summary = run_task(
            load_task(raw), tmp_path / score, registry=negated_registry, progress=quiet
        )
        assert not summary.cells_failed
        record = json.loads((tmp_path / score / "tuning.json").read_text())["objectives"]
        choices[score] = {label: record["rosenbrock"][label]["chosen"] for label in LABELS}
        assert record["rosenbrock"]["rs2:sgd"]["direction"] == (
            "max" if score == "neg_best" else "min"
        )
    # maximising -best_score chooses what minimising best_score chooses
    assert choices["neg_best"] == choices["best_score"]
    raw["tuning"]["score"] = "neg_bset"
    with pytest.raises(ConfigError, match="Valid: best_score, neg_best"):
        check_task(load_task(raw), negated_registry)


class _Absent(RandomSearch):
    """A hyperoptimizer whose optional package is not installed: it cannot even be built."""

    name = "absent_search"
    requires = (Requirement("optkit_no_such_package", "nope"),)

    def __init__(self, **config: Any) -> None:
        raise ModuleNotFoundError("No module named 'optkit_no_such_package'")


def test_a_hyperoptimizer_with_a_missing_package_is_skipped_not_checked() -> None:
    class Hooks:
        @hookimpl
        def optkit_register_hyperoptimizers(self, register):  # type: ignore[no-untyped-def]
            register(_Absent)

    registry = Registry(load(extra_plugins=[("absent", Hooks())]))
    raw = task_with(target=None)
    raw["hyperoptimizers"] = [TASK["hyperoptimizers"][0], {"name": "absent_search", "label": "x"}]
    report = check_task(load_task(raw), registry)
    assert [c.key for c in report.runnable] == ["rosenbrock|rs2:sgd|0", "rosenbrock|rs2:sgd|1"]
    assert all("optkit_no_such_package" in reason for _, reason in report.skipped)
