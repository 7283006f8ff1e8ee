"""The fused flat proxy loop (the engine with ``optkit_optex.rules.TorchFlatRule``): same
iterates as the generic rule, no host synchronisation in the device-side hot path."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch
from optkit_optex.config import EstimatorConfig, OptExConfig
from optkit_optex.engine import Engine
from optkit_optex.rules import TorchFlatRule, flat_rule_supported

from optkit.interfaces import Objective, Params
from optkit.oracle import Oracle
from optkit.registry import get_registry

REG = get_registry()
CPU = torch.device("cpu")


class TwoTensorLeastSquares(Objective):
    """``||A w + b - y||^2 / n`` with params ``{"w": (4, 3), "b": (3,)}`` on fixed data."""

    name: ClassVar[str] = "test_two_tensor_lsq"
    summary: ClassVar[str] = "two-tensor least squares (tests only)"

    def prepare(self, device: torch.device, dtype: torch.dtype) -> None:
        super().prepare(device, dtype)
        gen = torch.Generator().manual_seed(5)
        self.a = torch.randn(32, 4, generator=gen, dtype=dtype)
        self.y = torch.randn(32, 3, generator=gen, dtype=dtype)

    def init_params(self, generator: torch.Generator) -> Params:
        return {"w": torch.randn(4, 3, generator=generator), "b": torch.zeros(3)}

    def sample_batch(self, generator: torch.Generator, params: Params) -> None:
        return None

    def loss(self, params: Params, batch: Any) -> torch.Tensor:
        return ((self.a @ params["w"] + params["b"] - self.y) ** 2).mean()

    @torch.no_grad()
    def evaluate(self, params: Params) -> dict[str, float]:
        return {"loss": float(self.loss(params, None))}


class OptimizerRun:
    """The optimizer of ``spec`` on ``objective`` (default: ``fn`` in ``dim`` dimensions) on
    ``device``, float32, seed 1, the vmap executor."""

    def __init__(
        self,
        spec: dict[str, Any],
        objective: Objective | None = None,
        *,
        fn: str = "rosenbrock",
        dim: int = 60,
        device: torch.device = CPU,
    ) -> None:
        if objective is None:
            objective = REG.create("objective", {"name": fn, "dim": dim})
        objective.prepare(device, torch.float32)
        self.opt = REG.create("optimizer", spec)
        gen = torch.Generator().manual_seed(1)
        self.params = objective.init_params(gen)
        self.state = self.opt.init(self.params)
        self.oracle = Oracle(objective, REG.create("executor", {"name": "vmap"}), gen)

    def advance(self) -> None:
        """One iteration."""
        self.params, self.state, _ = self.opt.step(self.params, self.state, self.oracle)

    def step(self) -> Params:
        """One iteration; a host copy of the new params."""
        self.advance()
        return {k: v.detach().cpu().clone() for k, v in self.params.items()}


def trajectory(
    spec: dict[str, Any],
    objective: Objective | None = None,
    fn: str = "rosenbrock",
    *,
    steps: int = 7,
    dim: int = 60,
    device: torch.device = CPU,
) -> list[Params]:
    run = OptimizerRun(spec, objective, fn=fn, dim=dim, device=device)
    return [run.step() for _ in range(steps)]


@pytest.mark.parametrize(
    "base",
    [
        ("adam", {"lr": 0.05}, "rosenbrock"),
        ("sgd", {"lr": 0.05, "momentum": 0.9}, "sphere"),
        ("rmsprop", {"lr": 0.01}, "rosenbrock"),
    ],
    ids=["adam", "sgd-momentum", "rmsprop"],
)
@pytest.mark.parametrize("proxy_updates_state", [True, False])
@pytest.mark.parametrize("next_iterate", ["last", "best"])
def test_fused_path_gives_the_generic_iterates(
    base: tuple[str, dict[str, Any], str], proxy_updates_state: bool, next_iterate: str
) -> None:
    spec = {
        "name": "optex",
        "base": base[0],
        "base_config": base[1],
        "parallelism": 4,
        "history": 10,
        "proxy_updates_state": proxy_updates_state,
        "next_iterate": next_iterate,
    }
    assert REG.create("optimizer", spec).fused
    fused = trajectory(spec, fn=base[2])
    generic = trajectory({**spec, "fused": False}, fn=base[2])
    for a, b in zip(fused, generic, strict=True):
        torch.testing.assert_close(a["x"], b["x"], rtol=1e-6, atol=1e-6)
    assert not torch.equal(fused[-1]["x"], fused[0]["x"])


def test_fused_path_with_several_parameter_tensors() -> None:
    spec = {"name": "optex", "base": "adam", "base_config": {"lr": 0.05}, "parallelism": 3}
    fused = trajectory(spec, TwoTensorLeastSquares())
    generic = trajectory({**spec, "fused": False}, TwoTensorLeastSquares())
    for a, b in zip(fused, generic, strict=True):
        assert a["w"].shape == (4, 3) and a["b"].shape == (3,)
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-6)


def test_only_elementwise_torch_optim_bases_take_the_fused_path() -> None:
    for name in ("adam", "adamw", "sgd", "rmsprop", "adagrad", "adamax"):
        assert flat_rule_supported(REG.create("optimizer", {"name": name}))
    spec = {"name": "optex", "base": "adam", "fused": False}
    assert not REG.create("optimizer", spec).fused


def _scalar_reads(fn: Any) -> int:
    """``aten::_local_scalar_dense`` calls (every ``.item()``/``float(t)``/``bool(t)``: a host
    sync on a GPU) while ``fn()`` runs."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.name == "aten::_local_scalar_dense" for e in prof.events())


@pytest.mark.parametrize("device_solve", [False, True])
def test_the_device_side_hot_path_reads_no_scalars(device_solve: bool) -> None:
    """Proxy body (anchor move, device solve, N-1 queries and SGD steps), append and the
    oracle's finite check: no scalar read except the oracle's single one."""
    d, n, t0 = 300, 5, 12
    estimator = EstimatorConfig(history=t0, fit="fixed", lengthscale=1.0)
    config = OptExConfig(parallelism=n, next_iterate="best", estimator=estimator)
    engine = Engine(config, device_solve=device_solve)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(d, generator=gen)
    base = REG.create("optimizer", {"name": "sgd", "lr": 0.01, "momentum": 0.9})
    state = engine.init(x, lambda x0, cfg: TorchFlatRule(base, x0, cfg))
    est = state.estimator
    for _ in range(4):  # fill the history through the fused pieces themselves
        planned = engine.plan(x, state)
        grads = 2 * planned.points + torch.sin(planned.points)
        x, _, _ = engine.update(state, planned, grads, grads.sum(1))
    assert est.mode == "gp" and est.device_solve == device_solve
    state.P[0].copy_(x)
    est.begin(state.P[0], move_anchor=False)
    assert _scalar_reads(lambda: engine.proxy(state)) == 0
    grads = 2 * state.P + torch.sin(state.P)
    assert _scalar_reads(lambda: est.append(state.P, grads, 9, queried=state.SQ)) == 1
    assert _scalar_reads(lambda: est.append(state.P, grads, 9, check_finite=False)) == 0
    objective = REG.create("objective", {"name": "rosenbrock", "dim": 20})
    objective.prepare(torch.device("cpu"), torch.float32)
    oracle = Oracle(objective, REG.create("executor", {"name": "vmap"}), gen)
    points = [objective.init_params(gen) for _ in range(4)]
    assert _scalar_reads(lambda: oracle.evaluate(points)) == 1
