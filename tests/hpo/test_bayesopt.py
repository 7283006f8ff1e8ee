"""BoTorch Bayesian optimization: valid suggestions, progress on known functions, failures,
resume, layer selection and a real inner pairing."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from optkit_hpo.bayesopt import transform_scores
from optkit_hpo.space import parse_space

import optkit
from optkit.errors import ConfigError
from optkit.interfaces import TrialResult

pytestmark = pytest.mark.bo

MIXED: dict[str, Any] = {
    "optimizer.lr": {"low": 1e-5, "high": 1.0, "log": True},
    "optimizer.momentum": {"low": 0.0, "high": 1.0},
    "objective.dim": {"type": "int", "low": 1, "high": 10},
    "optimizer.name": {"choices": ["rmsprop", "sgd"]},
}
FAST = {"raw_samples": 32, "num_restarts": 2, "mc_samples": 32}


def quadratic(c: Any) -> float:
    """Known optimum 0 at lr = 10^-2.5, momentum 0.7, dim 7, rmsprop."""
    return (
        (math.log10(c["optimizer.lr"]) + 2.5) ** 2
        + 4 * (c["optimizer.momentum"] - 0.7) ** 2
        + 0.1 * (c["objective.dim"] - 7) ** 2
        + (0.0 if c["optimizer.name"] == "rmsprop" else 1.0)
    )


def make(name: str = "botorch", **config: Any) -> Any:
    spec = {"name": name, "space": MIXED, **(FAST if name == "botorch" else {}), **config}
    return optkit.get_registry().create("hyperoptimizer", spec)


@pytest.mark.parametrize(("seed", "categorical"), [(0, "enumerate"), (1, "relax")])
def test_suggestions_lie_in_the_space_and_improve_on_the_design(
    black_box: Any, seed: int, categorical: str
) -> None:
    space = parse_space(MIXED, "t")
    context, recorder = black_box(quadratic, seed=seed)
    rng_before = torch.random.get_rng_state()
    result = make(trials=16, batch_size=2, initial_trials=6, categorical=categorical).optimize(
        context
    )
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # global RNG untouched
    assert len(recorder.calls) == 16
    for config in recorder.calls:
        space.encode(config)  # raises when outside the space (bounds, integer, choice)
        assert isinstance(config["objective.dim"], int)
    rounds = [r for r in recorder.rows if r["hpo_event"] == "round"]
    assert [r["n_train"] for r in rounds] == [6, 8, 10, 12, 14]
    assert all(r["phase"] == "bo" and r["q"] == 2 and r["fit_s"] > 0 for r in rounds)

    # the GP rounds improve a lot on the Sobol design, and end near the optimum (0); random
    # search's best after 16 trials on these seeds: 0.135 and 0.652
    design_best = min(t.score for t in result.trials[:6])
    assert result.best_score < min(0.2, 0.2 * design_best)
    assert result.best_config["optimizer.name"] == "rmsprop"


def test_same_seed_same_suggestions(black_box: Any) -> None:
    calls = []
    for _ in range(2):
        context, recorder = black_box(quadratic, seed=5)
        make(trials=7, batch_size=2, initial_trials=3).optimize(context)
        calls.append(recorder.calls)
    assert calls[0] == calls[1]


@pytest.mark.parametrize("failures", ["worst", "exclude"])
def test_failed_trials_are_recorded_and_the_search_goes_on(black_box: Any, failures: str) -> None:
    def f(c: Any) -> float:
        if c["optimizer.lr"] > 1e-2:
            return math.nan  # the inner run diverged
        if c["optimizer.momentum"] > 0.95:
            raise RuntimeError("inner run crashed")
        return quadratic(c)

    context, recorder = black_box(f, seed=2)
    result = make(trials=12, batch_size=3, initial_trials=6, failures=failures).optimize(context)
    assert len(recorder.calls) == 12
    failed = [t for t in result.trials if not math.isfinite(t.score)]
    assert failed and all(t.error for t in failed)
    assert result.extras["trials_failed"] == len(failed)
    assert math.isfinite(result.best_score) and result.best_config["optimizer.lr"] <= 1e-2
    rounds = [r for r in recorder.rows if r["hpo_event"] == "round"]
    design_failed = sum(not math.isfinite(t.score) for t in result.trials[:6])
    expected = 6 if failures == "worst" else 6 - design_failed
    assert rounds[0]["n_train"] == expected


def test_a_model_needs_two_successes_before_it_is_fitted(black_box: Any) -> None:
    context, recorder = black_box(lambda c: math.nan, seed=0)
    result = make(trials=4, initial_trials=2).optimize(context)
    assert math.isnan(result.best_score) and result.extras["all_failed"] == 1
    assert [r["phase"] for r in recorder.rows if r["hpo_event"] == "round"] == ["random"] * 2
    assert len(recorder.calls) == 4


def test_resume_does_not_rerun_completed_trials_and_models_them(black_box: Any) -> None:
    context, full = black_box(quadratic, seed=3)
    reference = make(trials=8, batch_size=2, initial_trials=4).optimize(context)

    def completed(n: int) -> list[TrialResult]:
        return [TrialResult(dict(t.config), t.score) for t in reference.trials[:n]]

    # interrupted inside the Sobol design: the rest of the design runs, as before
    context, resumed = black_box(quadratic, seed=3, completed=completed(2))
    result = make(trials=8, batch_size=2, initial_trials=4).optimize(context)
    assert resumed.calls[:2] == full.calls[2:4]
    assert len(resumed.calls) == 6 and len(result.trials) == 8
    assert result.extras["trials_resumed"] == 2

    # interrupted after a BO round: the model is fitted on all six completed trials
    context, resumed = black_box(quadratic, seed=3, completed=completed(6))
    result = make(trials=8, batch_size=2, initial_trials=4).optimize(context)
    assert len(resumed.calls) == 2
    assert not any(call in full.calls[:6] for call in resumed.calls)
    rounds = [r for r in resumed.rows if r["hpo_event"] == "round"]
    assert [r["n_train"] for r in rounds] == [6]
    assert result.best_score <= min(t.score for t in reference.trials[:6])


def test_layer_selection_k_of_l(black_box: Any) -> None:
    target = {0, 1, 7}
    space = {"objective.layers": {"type": "layers", "num_layers": 8, "k": 3}}

    def f(c: Any) -> float:
        return float(len(target.symmetric_difference(c["objective.layers"])))

    # the LM objectives take `layers` (indices of the layers that get LoRA adapters)
    context, recorder = black_box(f, seed=0, objective_spec={"name": "rotten_tomatoes"})
    hyper = optkit.get_registry().create(
        "hyperoptimizer",
        {"name": "botorch", "space": space, "trials": 14, "batch_size": 2, **FAST},
    )
    result = hyper.optimize(context)
    chosen = [tuple(c["objective.layers"]) for c in recorder.calls]
    assert all(len(c) == 3 and list(c) == sorted(c) for c in chosen)
    assert len(set(chosen)) == len(chosen)  # no subset is tried twice
    assert result.best_score <= 2.0


def test_transform_scores_is_monotone() -> None:
    scores = torch.tensor([3.0, 1e4, 0.5, 20.0], dtype=torch.float64)
    for kind in ("none", "log", "rank"):
        out = transform_scores(scores, kind)
        assert torch.equal(out.argsort(), scores.argsort())
    ties = transform_scores(torch.tensor([2.0, 5.0, 5.0, 1.0], dtype=torch.float64), "rank")
    assert ties[1] == ties[2] and ties[3] < ties[0] < ties[1]
    shifted = transform_scores(scores - 10.0, "log")
    assert torch.isfinite(shifted).all() and torch.equal(shifted.argsort(), scores.argsort())


def test_tunes_adam_on_a_real_inner_problem(pairing: Any) -> None:
    context, recorder = pairing(
        {"name": "ackley", "dim": 10, "init_low": -3.0, "init_high": 3.0},
        {"name": "adam", "betas": [0.9, 0.999]},
        iterations=25,
        seed=0,
    )
    hyper = optkit.get_registry().create(
        "hyperoptimizer",
        {
            "name": "botorch",
            "space": {
                "optimizer.lr": {"low": 1e-4, "high": 1.0, "log": True},
                "optimizer.betas.0": {"low": 0.5, "high": 0.99},
            },
            "trials": 8,
            "batch_size": 2,
            "initial_trials": 4,
            **FAST,
        },
    )
    result = hyper.optimize(context)
    assert len(recorder.calls) == 8
    design_best = min(t.score for t in result.trials[:4])
    assert result.best_score <= design_best
    assert all(t.cost_s > 0 and "gap" in t.metrics for t in result.trials)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("acquisition", "ei", "'logei' | 'lognei'"),
        ("noise", 0.0, "'fitted' | 'none'"),
        ("gp_prior", "matern", "'dim_scaled' | 'matern_gamma'"),
        ("score_transform", "sqrt", "'rank' | 'log' | 'none'"),
    ],
)
def test_bad_model_options_are_refused_before_anything_runs(
    option: str, value: Any, message: str
) -> None:
    with pytest.raises(ConfigError, match=f"{option}.*{message}"):
        make(**{option: value})


@pytest.mark.parametrize(
    "options",
    [
        {"acquisition": "lognei", "gp_prior": "matern_gamma"},
        {"noise": "none"},
    ],
)
def test_noisy_ei_exact_noise_and_matern_prior_still_optimize(
    black_box: Any, options: dict[str, Any]
) -> None:
    context, recorder = black_box(quadratic, seed=0)
    result = make(trials=12, initial_trials=4, **options).optimize(context)
    assert len(recorder.calls) == 12
    rounds = [r for r in recorder.rows if r["hpo_event"] == "round"]
    assert [(r["phase"], r["n_train"]) for r in rounds] == [("bo", n) for n in range(4, 12)]
    design_best = min(t.score for t in result.trials[:4])
    assert result.best_score < 0.5 * design_best


def test_exact_noise_is_relative_to_the_score_scale() -> None:
    from optkit_hpo.bayesopt import EXACT_NOISE, BoTorchSearch

    y = torch.tensor([[1.0], [3.0], [5.0]], dtype=torch.float64)
    assert torch.allclose(BoTorchSearch.exact_noise(y), torch.full_like(y, 4.0 * EXACT_NOISE))
    assert torch.allclose(BoTorchSearch.exact_noise(100 * y), 1e4 * BoTorchSearch.exact_noise(y))
    flat = torch.ones(3, 1, dtype=torch.float64)
    assert torch.equal(BoTorchSearch.exact_noise(flat), torch.full_like(flat, EXACT_NOISE))


def test_default_design_is_parameters_plus_one_at_least_four() -> None:
    lr = {"low": 1e-3, "high": 1.0, "log": True}
    assert make().initial_trials == 5  # MIXED: 4 parameters
    assert make(space={"optimizer.lr": lr}).initial_trials == 4
    assert make(space={"optimizer.lr": lr}, trials=3).initial_trials == 3  # capped by trials
