"""Batches of [tuning] trials: ``HyperContext.run_trials`` falls back to ``run_trial`` in a
loop; random search hands its whole plan to the launcher at once, with the same results as
one trial at a time; a hyperoptimizer that only knows ``run_trial`` still tunes (each trial a
batch of one, run where the launcher runs trials); a batch whose launcher fails records its
trials as failed and the search goes on."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from optkit.executors import LocalLauncher
from optkit.interfaces import CellBatch, HyperContext, HyperOptimizer, HyperResult, TrialResult
from optkit.plugins import Entry, LoadedPlugins, Source
from optkit.registry import Registry, get_registry
from optkit.results import load_rows
from optkit.runner import quiet, run_task
from optkit.tasks import load_task
from optkit.tuning_trials import TrialJob

TASK: dict[str, Any] = {
    "name": "tuning-batch-test",
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
    ],
    "tuning": {
        "hyperoptimizer": {"name": "random_search", "trials": 3},
        "space": {"lr": {"low": 1e-4, "high": 0.1, "log": True}},
        "score": "loss",
        "seeds": [100],
        "budget": {"iterations": 5},
    },
}


class LoopOnly(HyperOptimizer):
    """Tries ``trials`` learning rates spaced evenly in log scale, through ``run_trial`` only
    (a hyperoptimizer written before ``run_trials`` existed)."""

    name: ClassVar[str] = "loop_only"
    summary: ClassVar[str] = "test: log-spaced learning rates through run_trial"

    def __init__(self, *, space: dict[str, dict[str, Any]], trials: int = 3) -> None:
        ((self.key, self.bounds),) = space.items()
        self.trials = trials

    def optimize(self, context: HyperContext) -> HyperResult:
        low, high = math.log(self.bounds["low"]), math.log(self.bounds["high"])
        steps = [low + (high - low) * i / (self.trials - 1) for i in range(self.trials)]
        done = [context.run_trial({self.key: math.exp(v)}) for v in steps]
        best = min(done, key=lambda t: t.score)
        return HyperResult(best.config, best.score, done)


class Counting(LocalLauncher):
    """``local``, remembering the size of every batch of trials it is given."""

    name: ClassVar[str] = "counting"
    sizes: ClassVar[list[int]] = []

    def launch(self, batch: CellBatch) -> None:
        if batch.cells and isinstance(batch.cells[0], TrialJob):
            Counting.sizes.append(len(batch.cells))
        super().launch(batch)


class Flaky(LocalLauncher):
    """Runs the first trial of a batch, then fails (a cluster lost mid-batch)."""

    name: ClassVar[str] = "flaky"

    def launch(self, batch: CellBatch) -> None:
        if not (batch.cells and isinstance(batch.cells[0], TrialJob)):
            return super().launch(batch)
        batch.run_here(batch.cells[0])
        raise RuntimeError("lost the cluster")


def registry() -> Registry:
    """The process-wide registry plus the test's hyperoptimizer and launchers."""
    base = get_registry()._loaded
    loaded = LoadedPlugins({kind: dict(entries) for kind, entries in base.entries.items()})
    source = Source("tests.core.test_tuning_batch", "tests", "")
    for kind, cls in (("hyperoptimizer", LoopOnly), ("launcher", Counting), ("launcher", Flaky)):
        loaded.entries[kind][cls.name] = Entry(kind, cls.name, cls, source)
    return Registry(loaded)


def trial_rows(out: Path) -> dict[tuple[str, int], dict[str, Any]]:
    rows = load_rows(out)
    return {(r["label"], r["trial"]): r for r in rows if r["event"] == "trial"}


def choices(out: Path) -> dict[str, Any]:
    return json.loads((out / "tuning.json").read_text())["objectives"]


def unused(_: Any) -> Any:
    raise AssertionError("not called by run_trials")


def context(run_trial: Any, run_batch: Any = None) -> HyperContext:
    return HyperContext(
        {"name": "sphere"},
        {"name": "sgd"},
        {"iterations": 1},
        0,
        torch.Generator(),
        run_trial,
        unused,
        unused,
        unused,
        run_batch=run_batch,
    )


def test_run_trials_without_a_batch_path_is_run_trial_in_a_loop() -> None:
    calls: list[dict[str, Any]] = []

    def run_trial(overrides: Any) -> TrialResult:
        calls.append(dict(overrides))
        return TrialResult(dict(overrides), float(overrides["optimizer.lr"]))

    configs = [{"optimizer.lr": v} for v in (0.3, 0.1, 0.2)]
    results = context(run_trial).run_trials(configs)
    assert calls == configs and [r.score for r in results] == [0.3, 0.1, 0.2]

    batches: list[list[Any]] = []

    def run_batch(overrides: list[Any]) -> list[TrialResult]:
        batches.append(overrides)
        return [TrialResult(dict(o), 1.0) for o in overrides]

    calls.clear()
    assert len(context(run_trial, run_batch).run_trials(configs)) == 3
    assert batches == [configs] and not calls
    with pytest.raises(RuntimeError, match="returned 1 results for 3 trials"):
        context(run_trial, lambda o: [TrialResult({}, 1.0)]).run_trials(configs)


def test_random_search_hands_its_whole_plan_over_with_the_results_of_one_at_a_time(
    tmp_path: Path,
) -> None:
    reg = registry()
    one = copy.deepcopy(TASK)
    one["tuning"]["hyperoptimizer"]["batch_size"] = 1
    Counting.sizes.clear()
    batched = run_task(
        load_task(TASK), tmp_path / "all", registry=reg, progress=quiet, launcher="counting"
    ).out
    assert Counting.sizes == [3, 3]  # each search: its 3 trials in one batch
    Counting.sizes.clear()
    single = run_task(
        load_task(one), tmp_path / "one", registry=reg, progress=quiet, launcher="counting"
    ).out
    assert Counting.sizes == [1] * 6
    a, b = trial_rows(batched), trial_rows(single)
    assert sorted(a) == sorted(b) == [(label, i) for label in ("adam", "dp") for i in range(3)]
    for key in a:
        assert a[key]["trial_config"] == b[key]["trial_config"]
        assert a[key]["score"] == b[key]["score"] and a[key]["status"] == b[key]["status"]
    assert all(r["status"] == "ok" for r in a.values())
    assert choices(batched) == choices(single)


def test_a_hyperoptimizer_that_only_calls_run_trial_still_tunes(tmp_path: Path) -> None:
    raw = copy.deepcopy(TASK)
    raw["tuning"]["hyperoptimizer"] = {"name": "loop_only", "trials": 3}
    Counting.sizes.clear()
    out = run_task(
        load_task(raw), tmp_path / "run", registry=registry(), progress=quiet, launcher="counting"
    ).out
    assert Counting.sizes == [1] * 6  # each run_trial: a batch of one, where trials run
    rows = trial_rows(out)
    for label in ("adam", "dp"):
        lrs = [rows[(label, i)]["trial_config"]["lr"] for i in range(3)]
        assert lrs == pytest.approx([1e-4, 10**-2.5, 0.1])
        best = min(range(3), key=lambda i: rows[(label, i)]["score"])
        assert choices(out)["rosenbrock"][label]["chosen"] == {"lr": lrs[best]}


def test_a_failed_batch_records_its_trials_as_failed_and_the_search_goes_on(
    tmp_path: Path,
) -> None:
    out = run_task(
        load_task(TASK), tmp_path / "run", registry=registry(), progress=quiet, launcher="flaky"
    ).out
    rows = trial_rows(out)
    for label in ("adam", "dp"):
        assert rows[(label, 0)]["status"] == "ok"
        for i in (1, 2):
            assert rows[(label, i)]["status"] == "failed"
            assert (
                "the launcher failed: RuntimeError: lost the cluster" in rows[(label, i)]["error"]
            )
            assert rows[(label, i)]["score"] is None  # nan, written as null
        chosen = choices(out)["rosenbrock"][label]
        assert chosen["chosen"] == rows[(label, 0)]["trial_config"]
        assert [t["status"] for t in chosen["trials"]] == ["ok", "failed", "failed"]
