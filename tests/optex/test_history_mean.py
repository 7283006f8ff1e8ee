"""``fit = "mean"``: issue 19's ablation that replaces the kernel by the plain mean of the
history gradients. The proxy estimate is exactly that mean; the optimizer runs on every path
(fused, generic, drop-in closure and ``step_batched``); conflicting options are refused."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from optkit_optex.config import EstimatorConfig, OptExConfig
from optkit_optex.engine import Engine
from optkit_optex.estimator import KernelGradientEstimator
from optkit_optex.flat import Flattener
from optkit_optex.rules import base_rule

import optkit
from optkit.errors import ConfigError
from optkit.oracle import Oracle
from optkit.registry import get_registry

from .test_torch_api_batched import flat, train

REG = get_registry()


def test_the_estimate_is_the_mean_of_the_stored_gradients_anywhere() -> None:
    """Ring of T0 = 4 after 6 pairs: the mean of the newest 4, at any query point."""
    gen = torch.Generator().manual_seed(0)
    est = KernelGradientEstimator(7, EstimatorConfig(history=4, fit="mean"))
    points, grads = torch.randn(6, 7, generator=gen), torch.randn(6, 7, generator=gen)
    for it, (lo, hi) in enumerate(((0, 3), (3, 6)), start=1):
        est.begin(points[lo])
        est.append(points[lo:hi], grads[lo:hi], iteration=it)
    est.begin(points[-1])
    assert est.mode == "mean" and est.hyper is None
    want = grads[2:].mean(0)
    for x in (points[-1], torch.randn(7, generator=gen) * 100):
        torch.testing.assert_close(est.query(x), want)
    mu = torch.empty(7)
    est.query_into(points[0], torch.empty(4), mu)
    torch.testing.assert_close(mu, want)


def test_the_proxy_steps_are_fed_the_history_mean() -> None:
    """SGD base: each proxy step moves by -lr x the mean of the stored gradients."""
    obj = REG.create("objective", {"name": "sphere", "dim": 12, "noise": 0.5})
    obj.prepare(torch.device("cpu"), torch.float32)
    gen = torch.Generator().manual_seed(1)
    start = obj.init_params(gen)
    layout = Flattener(start)
    config = OptExConfig(parallelism=3, estimator=EstimatorConfig(history=5, fit="mean"))
    engine = Engine(config)
    lr = 0.05
    state = engine.init(
        layout.flatten(start),
        base_rule(REG.create("optimizer", {"name": "sgd", "lr": lr}), layout, fused=True),
    )
    oracle = Oracle(obj, REG.create("executor", {"name": "serial"}), gen)
    x = layout.flatten(start)
    checked = 0
    for _ in range(5):
        est = state.estimator
        stored = est.G[: est.size].clone()
        planned = engine.plan(x, state)
        if planned.ran:
            step = -lr * stored.mean(0)
            for s in (1, 2):
                diff = planned.points[s] - planned.points[s - 1]
                torch.testing.assert_close(diff, step, rtol=1e-4, atol=1e-6)
            checked += 1
        evaluation = oracle.evaluate([layout.unflatten(p) for p in planned.expanded()])
        grads = layout.flatten_many(evaluation.grads)
        x, state, info = engine.update(state, planned, grads, evaluation.losses)
        assert info.extras["optex_lengthscale"] != info.extras["optex_lengthscale"]  # NaN
    assert checked == 4  # every iteration after the first (empty history)


def registered(fused: bool, iters: int = 6, **extra: Any) -> tuple[torch.Tensor, Oracle]:
    obj = REG.create("objective", {"name": "sphere", "dim": 50, "noise": 1.0})
    obj.prepare(torch.device("cpu"), torch.float32)
    spec = {"name": "optex", "base": "adam", "base_config": {"lr": 0.05}, "fit": "mean"}
    opt = REG.create("optimizer", {**spec, "fused": fused, **extra})
    gen = torch.Generator().manual_seed(0)
    params = obj.init_params(gen)
    state = opt.init(params)
    oracle = Oracle(obj, REG.create("executor", {"name": "vmap"}), gen)
    for _ in range(iters):
        params, state, _ = opt.step(params, state, oracle)
    return params["x"], oracle


@pytest.mark.parametrize(
    "extra",
    [{}, {"parallelism": 3, "batches_per_point": 2}, {"next_iterate": "best"}],
    ids=["defaults", "k2", "best"],
)
def test_fused_and_generic_paths_agree_and_count_every_worker(extra: dict[str, Any]) -> None:
    fused, o1 = registered(True, **extra)
    generic, o2 = registered(False, **extra)
    assert torch.isfinite(fused).all()
    assert torch.equal(fused, generic)
    n = extra.get("parallelism", 5) * extra.get("batches_per_point", 1)
    assert (
        (o1.sequential_steps, o1.grad_evals) == (o2.sequential_steps, o2.grad_evals) == (6, 6 * n)
    )


def test_the_drop_in_runs_it_on_the_closure_and_the_batched_path() -> None:
    m_seq, l_seq, opt = train(False, steps=6, fit="mean")
    m_bat, l_bat, _ = train(True, steps=6, fit="mean")
    assert opt.estimator is not None and opt.estimator.mode == "mean"
    torch.testing.assert_close(flat(m_bat), flat(m_seq), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.stack(l_bat), torch.stack(l_seq), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"fit": "mean", "lengthscale": 1.0}, "fit = 'mean' uses no kernel"),
        ({"fit": "mean", "noise": 0.1}, "fit = 'mean' uses no kernel"),
        ({"fit": "mean", "noise_estimate": "spread"}, "noise_estimate = 'spread' sets the"),
        ({"fit": "mean", "stop_variance": 0.3}, "stop_variance needs the kernel's posterior"),
    ],
)
def test_conflicting_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=rf"^optimizer 'optex': {message}"):
        OptExConfig.create(**options)
    with pytest.raises(ConfigError, match=message):
        REG.create("optimizer", {"name": "optex", **options})
    with pytest.raises(ConfigError, match=rf"^optkit.OptEx: {message}"):
        optkit.OptEx([torch.nn.Parameter(torch.zeros(3))], **options)
