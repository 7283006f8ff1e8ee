"""Hyperoptimizers hand several configurations to ``context.run_trials`` at once (a launcher
may run them in parallel) with the same trials, scores and choice as one at a time."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pytest

import optkit
from optkit.interfaces import HyperContext, TrialResult

SPACE: dict[str, Any] = {
    "optimizer.lr": {"low": 1e-4, "high": 1.0, "log": True},
    "optimizer.momentum": {"low": 0.0, "high": 1.0},
}


def bowl(c: Mapping[str, Any]) -> float:
    return (float(c["optimizer.lr"]) - 0.01) ** 2 * 1e3 + (c["optimizer.momentum"] - 0.5) ** 2


def batched(context: HyperContext) -> list[list[dict[str, Any]]]:
    """Give ``context`` a batch path that runs its trials through ``run_trial`` (the black
    box) and records each batch; returns the list of batches it is given."""
    batches: list[list[dict[str, Any]]] = []

    def run_batch(overrides: list[Mapping[str, Any]]) -> list[TrialResult]:
        batches.append([dict(o) for o in overrides])
        return [context.run_trial(o) for o in reversed(overrides)][::-1]  # any order

    context.run_batch = run_batch
    return batches


@pytest.mark.parametrize(
    ("spec", "sizes"),
    [
        ({"name": "random_search", "trials": 6}, [6]),
        ({"name": "random_search", "trials": 6, "batch_size": 4}, [4, 2]),
        pytest.param(
            {
                "name": "botorch",
                "trials": 7,
                "initial_trials": 3,
                "batch_size": 2,
                "raw_samples": 32,
                "num_restarts": 2,
                "mc_samples": 32,
            },
            [3, 2, 2],
            marks=pytest.mark.bo,
        ),
    ],
)
def test_batches_give_the_trials_and_choice_of_one_at_a_time(
    black_box: Any, spec: dict[str, Any], sizes: list[int]
) -> None:
    registry = optkit.get_registry()
    loop, loop_calls = black_box(bowl, seed=3)
    one = registry.create("hyperoptimizer", {**spec, "space": SPACE}).optimize(loop)
    context, calls = black_box(bowl, seed=3)
    batches = batched(context)
    many = registry.create("hyperoptimizer", {**spec, "space": SPACE}).optimize(context)
    assert [len(b) for b in batches] == sizes
    assert [c for b in batches for c in b] == loop_calls.calls
    assert sorted(map(repr, calls.calls)) == sorted(map(repr, loop_calls.calls))
    assert [dataclasses.astuple(t) for t in many.trials] == [
        dataclasses.astuple(t) for t in one.trials
    ]
    assert (many.best_config, many.best_score) == (one.best_config, one.best_score)


def test_a_batch_that_raises_fails_its_trials_and_the_search_goes_on(black_box: Any) -> None:
    context, _ = black_box(bowl, seed=3)

    def broken(overrides: list[Mapping[str, Any]]) -> list[TrialResult]:
        raise ConnectionError("cluster gone")

    context.run_batch = broken
    hyper = optkit.get_registry().create(
        "hyperoptimizer", {"name": "random_search", "trials": 4, "batch_size": 2, "space": SPACE}
    )
    result = hyper.optimize(context)
    assert len(result.trials) == 4
    assert all(t.error == "ConnectionError: cluster gone" for t in result.trials)
    assert result.extras["all_failed"] == 1 and result.best_config == {}


def test_batch_size_must_be_positive() -> None:
    with pytest.raises(optkit.errors.ConfigError, match="'batch_size' must be >= 1, got 0"):
        optkit.get_registry().create(
            "hyperoptimizer", {"name": "random_search", "batch_size": 0, "space": SPACE}
        )


@pytest.mark.bo
def test_botorch_searches_side_by_side_in_threads_propose_as_alone(black_box: Any) -> None:
    """``--launcher ray`` runs searches in threads of the driver; BoTorch seeds torch's one
    global RNG per round, so its proposals must not interleave."""
    import threading

    spec = {
        "name": "botorch",
        "space": SPACE,
        "trials": 6,
        "initial_trials": 2,
        "raw_samples": 32,
        "num_restarts": 2,
        "mc_samples": 32,
    }
    registry = optkit.get_registry()

    def search(seed: int) -> list[dict[str, Any]]:
        context, calls = black_box(bowl, seed=seed)
        registry.create("hyperoptimizer", spec).optimize(context)
        return calls.calls

    alone = {seed: search(seed) for seed in (1, 2, 3)}
    together: dict[int, list[dict[str, Any]]] = {}
    threads = [
        threading.Thread(target=lambda s=seed: together.__setitem__(s, search(s)))
        for seed in (1, 2, 3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert together == alone
