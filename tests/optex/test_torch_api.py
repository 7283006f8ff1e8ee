"""``optkit.OptEx``: the torch.optim-style entry point on a real model and real data."""

from __future__ import annotations

import pytest
import torch

import optkit
from optkit.errors import ConfigError
from optkit.oracle import Oracle
from optkit.registry import get_registry


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled 8x8 digits (1,797 real images, no download)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    return x, torch.tensor(data.target)


def train(make_opt, steps: int) -> float:  # type: ignore[no-untyped-def]
    x, y = digits()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10))
    opt = make_opt(model.parameters())

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    for _ in range(steps):
        opt.step(closure)
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(model(x), y))


def test_optex_trains_a_real_mlp_faster_per_sequential_step_than_adam() -> None:
    adam = train(lambda p: torch.optim.Adam(p, lr=0.01), steps=15)
    ours = train(lambda p: optkit.OptEx(p, base=torch.optim.Adam, parallelism=4, lr=0.01), steps=15)
    assert isinstance(
        optkit.OptEx([torch.nn.Parameter(torch.zeros(2))], lr=0.1), torch.optim.Optimizer
    )
    assert ours < 0.8 * adam, (ours, adam)


def test_matches_the_registered_optimizer_step_for_step() -> None:
    reg = get_registry()
    obj = reg.create("objective", {"name": "rosenbrock", "dim": 40})
    obj.prepare(torch.device("cpu"), torch.float32)
    gen = torch.Generator().manual_seed(3)
    start = obj.init_params(gen)
    spec = {"name": "optex", "base": "adam", "base_config": {"lr": 0.05}, "parallelism": 3}
    opt = reg.create("optimizer", spec)
    params, state = start, opt.init(start)
    oracle = Oracle(obj, reg.create("executor", {"name": "serial"}), gen)
    for _ in range(6):
        params, state, _ = opt.step(params, state, oracle)

    x = torch.nn.Parameter(start["x"].clone())
    torch_opt = optkit.OptEx([x], base=torch.optim.Adam, parallelism=3, lr=0.05)

    def closure() -> torch.Tensor:
        torch_opt.zero_grad()
        loss = obj.f(x)
        loss.backward()
        return loss

    for _ in range(6):
        torch_opt.step(closure)
    torch.testing.assert_close(x.detach(), params["x"], rtol=1e-5, atol=1e-5)
    assert len(torch_opt.last_losses) == 3


def test_best_rule_and_state_dict_round_trip() -> None:
    x = torch.nn.Parameter(torch.linspace(-2, 2, 30))
    opt = optkit.OptEx(
        [x], base=torch.optim.SGD, parallelism=3, next_iterate="best", lr=0.05, momentum=0.5
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (x**2).sum()
        loss.backward()
        return loss

    first = float(closure().detach())
    for _ in range(5):
        opt.step(closure)
    assert float(closure().detach()) < 0.5 * first
    again = optkit.OptEx([x], base=torch.optim.SGD, parallelism=3, lr=0.05, momentum=0.5)
    again.load_state_dict(opt.state_dict())
    assert again.base.state_dict()["state"].keys() == opt.base.state_dict()["state"].keys()


def test_bad_input() -> None:
    p = [torch.nn.Parameter(torch.zeros(3))]
    with pytest.raises(ConfigError, match=r"base must be a torch.optim.Optimizer class"):
        optkit.OptEx(p, base="adam")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"parallelism must be >= 1"):
        optkit.OptEx(p, parallelism=0)
    with pytest.raises(ConfigError, match=r"history .T0. must be >= 2"):
        optkit.OptEx(p, history=1)
    with pytest.raises(ConfigError, match=r"bad keyword for Adam"):
        optkit.OptEx(p, lrr=0.1)
    with pytest.raises(ConfigError, match=r"needs a closure"):
        optkit.OptEx(p).step()
