"""The registered ``optex`` optimizer: counts, quality against vanilla, executors, errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from optkit.errors import ConfigError, PluginError
from optkit.oracle import Oracle
from optkit.registry import get_registry

REG = get_registry()


def run(
    spec: dict[str, Any],
    fn: str = "sphere",
    d: int = 200,
    iters: int = 15,
    seed: int = 0,
    noise: float = 0.0,
    executor: str = "vmap",
) -> tuple[list[float], dict[str, torch.Tensor], Oracle]:
    obj = REG.create("objective", {"name": fn, "dim": d, "noise": noise})
    obj.prepare(torch.device("cpu"), torch.float32)
    opt = REG.create("optimizer", spec)
    gen = torch.Generator().manual_seed(seed)
    params = obj.init_params(gen)
    state = opt.init(params)
    oracle = Oracle(obj, REG.create("executor", {"name": executor}), gen)
    losses = [obj.evaluate(params)["loss"]]
    for _ in range(iters):
        params, state, _ = opt.step(params, state, oracle)
        losses.append(obj.evaluate(params)["loss"])
    return losses, params, oracle


def optex(n: int, **extra: Any) -> dict[str, Any]:
    return {"name": "optex", "base": "adam", "base_config": {"lr": 0.05}, "parallelism": n, **extra}


def first_below(losses: list[float], goal: float) -> int:
    return next(i for i, v in enumerate(losses) if v <= goal)


def test_counts_one_sequential_step_and_n_gradients_per_iteration() -> None:
    _, _, oracle = run(optex(4), iters=6)
    assert (oracle.sequential_steps, oracle.grad_evals) == (6, 24)


@pytest.mark.parametrize("fn", ["sphere", "rosenbrock"])
def test_optex_needs_fewer_sequential_steps_than_vanilla(fn: str) -> None:
    vanilla, _, _ = run({"name": "adam", "lr": 0.05}, fn=fn, iters=20)
    ours, _, oracle = run(optex(5), fn=fn, iters=8)
    target, _, _ = run(
        {"name": "target", "base": "adam", "base_config": {"lr": 0.05}, "parallelism": 5},
        fn=fn,
        iters=8,
    )
    hit = first_below(ours, vanilla[-1])  # vanilla's 20-iteration loss
    assert hit <= 6, (hit, ours, vanilla[-1])
    assert hit <= 1.5 * first_below(target, vanilla[-1])
    assert oracle.sequential_steps == 8


def test_noisy_gradients_optex_still_beats_vanilla() -> None:
    vanilla, _, _ = run({"name": "adam", "lr": 0.05}, iters=12, noise=5.0)
    ours, _, _ = run(optex(4), iters=12, noise=5.0)
    assert ours[-1] < 0.8 * vanilla[-1]


def test_vmap_and_serial_executors_agree() -> None:
    _, p_vmap, o1 = run(optex(3, next_iterate="best"), iters=5, noise=1.0, executor="vmap")
    _, p_serial, o2 = run(optex(3, next_iterate="best"), iters=5, noise=1.0, executor="serial")
    torch.testing.assert_close(p_vmap["x"], p_serial["x"], rtol=1e-4, atol=1e-4)
    assert (o1.grad_evals, o1.sequential_steps) == (o2.grad_evals, o2.sequential_steps)


def test_parallelism_one_is_the_base_optimizer() -> None:
    _, p_optex, _ = run(optex(1), iters=5)
    _, p_adam, _ = run({"name": "adam", "lr": 0.05}, iters=5)
    torch.testing.assert_close(p_optex["x"], p_adam["x"])


@pytest.mark.parametrize(
    "extra",
    [
        {"next_iterate": "best"},
        {"proxy_updates_state": False},
        {"kernel": "rbf"},
        {"fit": "fixed", "lengthscale": 2.0, "noise": 1e-3},
        pytest.param(
            {"fit": "mll", "mll_steps": 5, "refit_every": 3, "fit_coords": 16},
            marks=pytest.mark.optex,
        ),
        {"base": "sgd", "base_config": {"lr": 0.01, "momentum": 0.9}},
    ],
    ids=["best", "no-proxy-state", "rbf", "fixed", "mll", "sgd"],
)
def test_options_run_and_descend(extra: dict[str, Any]) -> None:
    losses, _, oracle = run({**optex(3), **extra}, iters=6)
    assert losses[-1] < 0.9 * losses[0]
    assert oracle.grad_evals == 18


def test_multi_tensor_params_round_trip() -> None:
    from optkit_optex.flat import Flattener

    params = {"w": torch.arange(6.0).view(2, 3), "b": torch.tensor([7.0])}
    flat = Flattener(params)
    vec = flat.flatten(params)
    assert vec.tolist() == [0, 1, 2, 3, 4, 5, 7]
    back = flat.unflatten(vec)
    assert all(torch.equal(back[k], params[k]) for k in params)


@pytest.mark.parametrize(
    ("extra", "error", "message"),
    [
        ({"parallelism": 0}, ConfigError, "parallelism must be >= 1"),
        ({"history": 1}, ConfigError, "history .T0. must be >= 2"),
        ({"base": "adamm"}, PluginError, "unknown base optimizer 'adamm'"),
        ({"base": "target"}, ConfigError, "base 'target' is not a first-order optimizer"),
        ({"kernel": "laplace"}, ConfigError, "unknown kernel 'laplace'"),
        ({"fit": "fixed"}, ConfigError, "needs a lengthscale"),
        ({"base_config": {"lrr": 0.1}}, ConfigError, "unknown key 'lrr'"),
        ({"next_iterate": "first"}, ConfigError, "next_iterate"),
        ({"fit_lag": -1}, ConfigError, "fit_lag must be an integer >= 0"),
        ({"device_solve": "yes"}, ConfigError, "device_solve"),
        ({"cuda_graph": 1}, ConfigError, "cuda_graph"),
    ],
)
def test_bad_config_is_a_clear_error_before_running(
    extra: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        REG.create("optimizer", {**optex(3), **extra})


def test_supports_delegates_to_the_base() -> None:
    obj = REG.create("objective", {"name": "sphere", "dim": 3})
    assert REG.create("optimizer", optex(2)).supports(obj).ok


def test_registering_the_plugin_does_not_import_gpytorch() -> None:
    """Listing plugins stays fast: gpytorch loads only when a marginal-likelihood fit runs."""
    import subprocess
    import sys

    code = (
        "import sys, optkit; r = optkit.get_registry();"
        " assert 'optex' in r.names('optimizer') and 'target' in r.names('optimizer');"
        " r.create('optimizer', {'name': 'optex'});"
        " print('gpytorch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
