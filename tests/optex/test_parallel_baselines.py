"""The ``target`` and ``data_parallel`` baselines: counts and behaviour."""

from __future__ import annotations

import pytest
import torch

from optkit.errors import ConfigError, PluginError
from optkit.oracle import Oracle
from optkit.registry import get_registry

REG = get_registry()


def drive(spec: dict, iters: int, noise: float = 0.0, d: int = 50):  # type: ignore[no-untyped-def, type-arg]
    obj = REG.create("objective", {"name": "rosenbrock", "dim": d, "noise": noise})
    obj.prepare(torch.device("cpu"), torch.float32)
    opt = REG.create("optimizer", spec)
    gen = torch.Generator().manual_seed(0)
    params = obj.init_params(gen)
    state = opt.init(params)
    oracle = Oracle(obj, REG.create("executor", {"name": "vmap"}), gen)
    for _ in range(iters):
        params, state, _ = opt.step(params, state, oracle)
    return params, oracle


def wrapped(name: str, n: int) -> dict:  # type: ignore[type-arg]
    return {"name": name, "base": "adam", "base_config": {"lr": 0.02}, "parallelism": n}


def test_target_is_n_true_steps_per_counted_round() -> None:
    p_target, oracle = drive(wrapped("target", 4), iters=5)
    p_vanilla, vanilla = drive({"name": "adam", "lr": 0.02}, iters=20)
    torch.testing.assert_close(p_target["x"], p_vanilla["x"])
    assert (oracle.sequential_steps, oracle.grad_evals) == (5, 20)
    assert (vanilla.sequential_steps, vanilla.grad_evals) == (20, 20)


def test_data_parallel_counts_and_equals_vanilla_on_exact_gradients() -> None:
    p_dp, oracle = drive(wrapped("data_parallel", 4), iters=5)
    p_vanilla, _ = drive({"name": "adam", "lr": 0.02}, iters=5)
    torch.testing.assert_close(p_dp["x"], p_vanilla["x"])
    assert (oracle.sequential_steps, oracle.grad_evals) == (5, 20)


def test_data_parallel_averages_n_independent_minibatches() -> None:
    """With gradient noise the step uses the mean of N draws: its noise shrinks ~ 1/sqrt(N)."""
    obj = REG.create("objective", {"name": "sphere", "dim": 4000, "noise": 1.0})
    obj.prepare(torch.device("cpu"), torch.float32)
    dp = REG.create(
        "optimizer",
        {"name": "data_parallel", "base": "sgd", "base_config": {"lr": 1.0}, "parallelism": 16},
    )
    x0 = {"x": torch.zeros(4000)}  # true gradient 0: the step is minus the averaged noise
    oracle = Oracle(obj, REG.create("executor", {"name": "vmap"}), torch.Generator().manual_seed(1))
    new, _, _ = dp.step(x0, dp.init(x0), oracle)
    assert float(new["x"].std()) == pytest.approx(1.0 / 4.0, rel=0.05)


@pytest.mark.parametrize("name", ["target", "data_parallel"])
def test_config_errors(name: str) -> None:
    with pytest.raises(ConfigError, match=r"parallelism must be >= 1"):
        REG.create("optimizer", {**wrapped(name, 0)})
    with pytest.raises(PluginError, match=r"unknown base optimizer 'nope'"):
        REG.create("optimizer", {**wrapped(name, 2), "base": "nope"})
    with pytest.raises(ConfigError, match=r"not a first-order optimizer"):
        REG.create("optimizer", {**wrapped(name, 2), "base": "optex"})
