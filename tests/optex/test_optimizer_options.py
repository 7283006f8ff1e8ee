"""Issue 19's options of the registered ``optex`` optimizer: points x batches per point
(P x K workers), early-stopping proxy trajectories, and the estimator options end to end;
counters honest, fused and generic paths equal, bad values refused at construction."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from optkit.errors import ConfigError
from optkit.oracle import Oracle
from optkit.registry import get_registry

REG = get_registry()


def run(
    spec: dict[str, Any], iters: int = 8, noise: float = 0.0, d: int = 200, fn: str = "sphere"
) -> tuple[list[float], dict[str, torch.Tensor], Oracle, list[dict[str, float]]]:
    obj = REG.create("objective", {"name": fn, "dim": d, "noise": noise})
    obj.prepare(torch.device("cpu"), torch.float32)
    opt = REG.create("optimizer", spec)
    gen = torch.Generator().manual_seed(0)
    params = obj.init_params(gen)
    state = opt.init(params)
    oracle = Oracle(obj, REG.create("executor", {"name": "vmap"}), gen)
    losses, extras = [obj.evaluate(params)["loss"]], []
    for _ in range(iters):
        params, state, info = opt.step(params, state, oracle)
        losses.append(obj.evaluate(params)["loss"])
        extras.append(info.extras)
    return losses, params, oracle, extras


def optex(n: int, **extra: Any) -> dict[str, Any]:
    return {"name": "optex", "base": "adam", "base_config": {"lr": 0.05}, "parallelism": n, **extra}


@pytest.mark.parametrize("fused", [True, False])
def test_points_times_batches_counts_every_worker(fused: bool) -> None:
    _, _, oracle, _ = run(optex(3, batches_per_point=4, fused=fused), iters=5, noise=1.0)
    assert (oracle.sequential_steps, oracle.grad_evals) == (5, 5 * 3 * 4)


def test_one_point_with_k_batches_is_data_parallel_with_k_workers() -> None:
    """P = 1, K = 4 is exactly one base step on the mean of 4 minibatch gradients: the
    ``data_parallel`` baseline with 4 workers (same batches, same iterates)."""
    _, ours, o1, _ = run(optex(1, batches_per_point=4), iters=6, noise=3.0)
    dp = {"name": "data_parallel", "base": "adam", "base_config": {"lr": 0.05}, "parallelism": 4}
    _, theirs, o2, _ = run(dp, iters=6, noise=3.0)
    torch.testing.assert_close(ours["x"], theirs["x"])
    assert (o1.grad_evals, o1.sequential_steps) == (o2.grad_evals, o2.sequential_steps)


def test_one_batch_per_point_is_todays_optex_bit_for_bit() -> None:
    _, a, _, _ = run(optex(4), noise=1.0)
    _, b, _, _ = run(optex(4, batches_per_point=1), noise=1.0)
    assert torch.equal(a["x"], b["x"])


def test_averaging_batches_per_point_lowers_the_loss_under_heavy_noise() -> None:
    one, _, _, _ = run(optex(3), iters=12, noise=30.0)
    four, _, _, _ = run(optex(3, batches_per_point=4), iters=12, noise=30.0)
    assert four[-1] < one[-1]


@pytest.mark.parametrize(
    "extra",
    [
        {"batches_per_point": 3},
        {"stop_variance": 0.3},
        {"stop_variance": 0.3, "batches_per_point": 2, "next_iterate": "best"},
        {"noise_estimate": "spread", "batches_per_point": 2},
        {"noise_estimate": "spread"},
        {"fit": "forward"},
        {"effective_dim": 50},
    ],
    ids=["k3", "stop", "stop-k2-best", "spread-k2", "spread", "forward", "effdim"],
)
def test_fused_and_generic_paths_agree_with_the_new_options(extra: dict[str, Any]) -> None:
    _, fused, o1, e1 = run(optex(4, fused=True, **extra), iters=6, noise=2.0)
    _, generic, o2, e2 = run(optex(4, fused=False, **extra), iters=6, noise=2.0)
    torch.testing.assert_close(fused["x"], generic["x"], rtol=1e-5, atol=1e-5)
    assert [e["optex_points"] for e in e1] == [e["optex_points"] for e in e2]
    assert o1.grad_evals == o2.grad_evals


@pytest.mark.parametrize("fused", [True, False])
def test_a_tiny_stop_variance_shortens_every_gp_iteration_to_one_point(fused: bool) -> None:
    """Variance above ~0 everywhere off the stored points: each iteration with a kernel
    estimate stops at its start point, and its workers all evaluate that point (a
    data-parallel step): one base step per iteration, N gradients counted, never more.
    Iterations without a kernel (empty history, coinciding points, the lagged first fit)
    take all N points."""
    _, _, oracle, extras = run(optex(4, stop_variance=1e-12, fused=fused), iters=8, noise=1.0)
    gp = [e["optex_points"] for e in extras if e["optex_lengthscale"] == e["optex_lengthscale"]]
    other = [e["optex_points"] for e in extras if e["optex_lengthscale"] != e["optex_lengthscale"]]
    assert len(gp) >= 3 and gp == [1.0] * len(gp)
    assert other == [4.0] * len(other)
    assert (oracle.sequential_steps, oracle.grad_evals) == (8, 32)


def test_stop_variance_one_never_stops() -> None:
    _, a, _, _ = run(optex(4), noise=1.0)
    _, b, _, extras = run(optex(4, stop_variance=1.0), noise=1.0)
    torch.testing.assert_close(a["x"], b["x"])
    assert all(e["optex_points"] == 4.0 for e in extras)


@pytest.mark.parametrize("fit", ["forward", "reference"])
def test_fit_modes_descend(fit: str) -> None:
    losses, _, _, extras = run(optex(4, fit=fit), iters=8)
    assert losses[-1] < 0.5 * losses[0]
    if fit == "reference":
        assert extras[-1]["optex_noise"] == 1e-3


def test_forward_fit_and_effective_dim_still_beat_vanilla_on_sphere() -> None:
    vanilla, _, _, _ = run({"name": "adam", "lr": 0.05}, iters=20)
    for extra in ({"fit": "forward"}, {"effective_dim": 40}, {"noise_estimate": "spread"}):
        ours, _, _, _ = run(optex(5, **extra), iters=8)
        assert ours[-1] < vanilla[-1], extra


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"batches_per_point": 0}, "batches_per_point must be an integer >= 1"),
        ({"batches_per_point": -2}, "batches_per_point must be an integer >= 1"),
        ({"batches_per_point": 1.5}, "key 'batches_per_point' of optimizer 'optex' must be int"),
        ({"batches_per_point": True}, "key 'batches_per_point' of optimizer 'optex' must be int"),
        ({"stop_variance": 0.0}, r"stop_variance must be a number in \(0, 1\]"),
        ({"stop_variance": 1.5}, r"stop_variance must be a number in \(0, 1\]"),
        (
            {"fit": "loo"},
            "'fit' of optimizer 'optex' must be 'heuristic' .* 'forward' | 'reference'",
        ),
        ({"effective_dim": 0}, "effective_dim must be an integer >= 1"),
        ({"noise_estimate": "spread", "noise": 0.1}, "noise_estimate = 'spread'"),
    ],
)
def test_bad_new_options_are_config_errors_at_construction(
    extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        REG.create("optimizer", {**optex(3), **extra})


def test_effective_dim_above_the_parameter_count_is_refused_before_the_first_step() -> None:
    obj = REG.create("objective", {"name": "sphere", "dim": 20})
    obj.prepare(torch.device("cpu"), torch.float32)
    opt = REG.create("optimizer", optex(3, effective_dim=21))
    with pytest.raises(ConfigError, match=r"effective_dim = 21 is larger than .* \(20\)"):
        opt.init(obj.init_params(torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("fused", [True, False])
def test_spread_noise_with_k_batches_measures_the_objectives_gradient_noise(fused: bool) -> None:
    """The sphere's gradient noise is Gaussian with std 2 per coordinate (variance 4): with
    K = 2 gradients per point the measured noise of the stored means is 4 / 2 = 2 per round;
    without replication (K = 1) the consecutive-difference estimate also sees the noise
    (variance 4 of single gradients) plus a little signal change."""
    obj = REG.create("objective", {"name": "sphere", "dim": 500, "noise": 2.0})
    obj.prepare(torch.device("cpu"), torch.float32)
    for k, want in ((2, 2.0), (1, 4.0)):
        opt = REG.create(
            "optimizer", optex(3, batches_per_point=k, noise_estimate="spread", fused=fused)
        )
        gen = torch.Generator().manual_seed(0)
        params = obj.init_params(gen)
        state = opt.init(params)
        oracle = Oracle(obj, REG.create("executor", {"name": "vmap"}), gen)
        for _ in range(6):
            params, state, _ = opt.step(params, state, oracle)
        measured = list(state.estimator._round_noise)
        assert len(measured) == 5  # read at each begin after an append
        assert all(abs(v / want - 1) < 0.35 for v in measured), (k, measured)
