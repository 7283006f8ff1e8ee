"""Random search: reproducible by seed, real inner runs, failed trials, resume."""

from __future__ import annotations

import math
from typing import Any

import pytest

import optkit
from optkit.errors import ConfigError
from optkit.interfaces import TrialResult

SPACE: dict[str, Any] = {
    "optimizer.lr": {"low": 1e-3, "high": 3.0, "log": True},
    "optimizer.momentum": {"low": 0.0, "high": 0.9},
}


def make(trials: int = 6, space: dict[str, Any] | None = None) -> Any:
    spec = {"name": "random_search", "space": space or SPACE, "trials": trials}
    return optkit.get_registry().create("hyperoptimizer", spec)


def test_same_seed_same_configs_other_seed_other_configs(black_box: Any) -> None:
    def f(c: Any) -> float:
        return (math.log10(c["optimizer.lr"]) + 1) ** 2

    runs = []
    for seed in (3, 3, 4):
        context, recorder = black_box(f, seed=seed)
        result = make().optimize(context)
        assert len(result.trials) == len(recorder.calls) == 6
        runs.append(recorder.calls)
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_real_inner_runs_with_divergent_trials_recorded_as_failed(pairing: Any) -> None:
    # SGD on Rosenbrock: large learning rates diverge (the Oracle raises DivergenceError)
    context, recorder = pairing(
        {"name": "rosenbrock", "dim": 4, "init_low": -1.0, "init_high": 1.0},
        {"name": "sgd"},
        iterations=30,
        seed=0,
    )
    space = {**SPACE, "optimizer.lr": {"low": 1e-5, "high": 1e-1, "log": True}}
    result = make(trials=8, space=space).optimize(context)
    assert len(recorder.calls) == 8
    failed = [t for t in result.trials if not math.isfinite(t.score)]
    ok = [t for t in result.trials if math.isfinite(t.score)]
    assert failed and ok, [t.score for t in result.trials]
    assert all("DivergenceError" in (t.error or "") for t in failed)
    assert result.extras["trials_failed"] == len(failed)
    assert result.best_score == min(t.score for t in ok)
    assert result.best_config in [t.config for t in ok]
    assert result.best_config["optimizer.lr"] < 3e-3


def test_a_trial_that_raises_is_recorded_and_the_search_goes_on(black_box: Any) -> None:
    def f(c: Any) -> float:
        if c["optimizer.lr"] > 0.05:
            raise RuntimeError("inner run crashed")
        return c["optimizer.lr"]

    context, recorder = black_box(f, seed=0)
    result = make(trials=10).optimize(context)
    assert len(recorder.calls) == 10
    raised = [t for t in result.trials if t.error and "inner run crashed" in t.error]
    assert raised and all(math.isnan(t.score) for t in raised)
    assert [r["trial"] for r in recorder.rows if r["hpo_event"] == "trial_raised"] == [
        i for i, t in enumerate(result.trials) if t in raised
    ]
    assert math.isfinite(result.best_score)


def test_all_trials_failing_gives_nan_best_with_the_first_error(black_box: Any) -> None:
    context, _ = black_box(lambda c: math.nan, seed=0)
    result = make(trials=3).optimize(context)
    assert math.isnan(result.best_score) and result.best_config == {}
    assert result.extras["all_failed"] == 1
    assert "nan" in result.extras["first_error"]


def test_resume_skips_completed_trials(black_box: Any) -> None:
    def f(c: Any) -> float:
        return (math.log10(c["optimizer.lr"]) + 1) ** 2 + c["optimizer.momentum"]

    context, full = black_box(f, seed=7)
    reference = make(trials=7).optimize(context)
    done = [
        TrialResult({k: v for k, v in t.config.items()}, t.score, {}, None, 0.0)
        for t in reference.trials[:4]
    ]
    context, resumed = black_box(f, seed=7, completed=done)
    result = make(trials=7).optimize(context)
    assert resumed.calls == full.calls[4:]  # the completed four are not run again
    assert [t.config for t in result.trials] == [t.config for t in reference.trials]
    assert result.best_score == reference.best_score
    assert result.extras["trials_resumed"] == 4


def test_unknown_inner_key_fails_before_any_trial(black_box: Any) -> None:
    space = {"optimizer.lrr": {"low": 1e-3, "high": 1.0, "log": True}}
    context, recorder = black_box(lambda c: 0.0, seed=0)
    with pytest.raises(ConfigError, match="'lrr'"):
        make(space=space).optimize(context)
    assert recorder.calls == []
