"""The contracts every plugin must keep, as plain functions that raise ``AssertionError``.

Plugin classes may declare ``test_config: ClassVar[dict]`` (a small configuration for these
checks, e.g. a small dimension or data slice); :func:`example_config` reads it.
"""

from __future__ import annotations

import copy
import math
from typing import Any, ClassVar

import torch
from torch.func import grad, vmap
from torch.utils import _pytree as pytree

from optkit.executors import SerialExecutor, stack_batches, stack_points
from optkit.interfaces import (
    Executor,
    FirstOrderOptimizer,
    Objective,
    Optimizer,
    Params,
)
from optkit.oracle import Oracle


def example_config(cls: type) -> dict[str, Any]:
    """The class's ``test_config`` (a copy), or ``{}``."""
    return copy.deepcopy(getattr(cls, "test_config", {}))


class NoisyQuadratic(Objective):
    """``0.5 * sum(scale_i * x_i^2) + noise . x`` on ``{"x": (dim,)}``: the kits' reference.

    Deterministic optimum 0 at 0; ``noise > 0`` gives stochastic gradients through the batch.
    """

    name: ClassVar[str] = "testing_quadratic"
    summary: ClassVar[str] = "reference objective of optkit.testing"

    def __init__(self, *, dim: int = 8, noise: float = 0.0) -> None:
        self.dim = dim
        self.noise = noise
        self.stochastic = noise > 0
        self.optimum = 0.0

    def init_params(self, generator: torch.Generator) -> Params:
        x = torch.randn(self.dim, generator=generator, dtype=self.dtype)
        return {"x": x.to(self.device)}

    def sample_batch(self, generator: torch.Generator, params: Params) -> torch.Tensor | None:
        if self.noise == 0:
            return None
        xi = torch.randn(self.dim, generator=generator, dtype=self.dtype)
        return (self.noise * xi).to(self.device)

    def scales(self) -> torch.Tensor:
        return torch.linspace(0.5, 2.0, self.dim, dtype=self.dtype, device=self.device)

    def loss(self, params: Params, batch: torch.Tensor | None) -> torch.Tensor:
        x = params["x"]
        value = 0.5 * (self.scales() * x * x).sum()
        return value if batch is None else value + (batch * x).sum()

    @torch.no_grad()
    def evaluate(self, params: Params) -> dict[str, float]:
        value = float(self.loss(params, None))
        return {"loss": value, "gap": value}

    def metric_direction(self) -> dict[str, str]:
        return {"loss": "min", "gap": "min"}


def reference_objective(noise: float = 0.0, dim: int = 8) -> NoisyQuadratic:
    objective = NoisyQuadratic(dim=dim, noise=noise)
    objective.prepare(torch.device("cpu"), torch.float32)
    return objective


def _clone(params: Params) -> Params:
    return {k: v.detach().clone() for k, v in params.items()}


def _assert_same_params(a: Params, b: Params, what: str, atol: float = 0.0) -> None:
    assert a.keys() == b.keys(), f"{what}: keys differ: {sorted(a)} vs {sorted(b)}"
    for key in a:
        assert a[key].shape == b[key].shape, f"{what}: shape of '{key}' differs"
        assert torch.allclose(a[key], b[key], atol=atol, rtol=1e-5 if atol else 0.0), (
            f"{what}: '{key}' differs (max abs diff {float((a[key] - b[key]).abs().max()):.3g})"
        )


def _same_batch(a: Any, b: Any) -> bool:
    leaves_a, spec_a = pytree.tree_flatten(a)
    leaves_b, spec_b = pytree.tree_flatten(b)
    if spec_a != spec_b:
        return False
    return all(
        torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y
        for x, y in zip(leaves_a, leaves_b, strict=True)
    )


def check_objective(
    objective: Objective,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> None:
    """Check the :class:`Objective` contract on one configured instance.

    Checks: a ``name``; ``prepare`` then seeded ``init_params`` and ``sample_batch`` are
    reproducible; ``loss`` is a finite 0-dim tensor, leaves params untouched, and its
    ``torch.func.grad`` equals autograd's; ``evaluate`` has a finite ``"loss"``, every metric
    it reports is declared by ``metric_direction()`` (``check`` validates ``score`` against
    those names) with a known direction; the loss is not below a declared ``optimum``; when
    ``vmappable``, a vmapped evaluation of two points equals two single ones.
    """
    assert objective.name, f"{type(objective).__name__} has no 'name'"
    device = torch.device(device)
    objective.prepare(device, dtype)
    objective.prepare(device, dtype)  # must be idempotent
    params = objective.init_params(torch.Generator().manual_seed(seed))
    again = objective.init_params(torch.Generator().manual_seed(seed))
    assert isinstance(params, dict) and params, "init_params must return a non-empty dict"
    _assert_same_params(params, again, "init_params with the same seed")
    for key, value in params.items():
        assert isinstance(value, torch.Tensor), f"param '{key}' is not a tensor"
        assert value.device.type == device.type, f"param '{key}' is on {value.device}"
        assert value.is_floating_point(), f"param '{key}' is not floating point"
    if objective.stateful_sampling:
        # sampling advances the objective's own state (an environment): a restarted run from
        # the same seed must reproduce the same first batch
        generator = torch.Generator().manual_seed(seed)
        params = objective.init_params(generator)
        batch = objective.sample_batch(generator, params)
        generator = torch.Generator().manual_seed(seed)
        batch_again = objective.sample_batch(generator, objective.init_params(generator))
        assert _same_batch(batch, batch_again), "a restarted run's first batch differs"
    else:
        batch = objective.sample_batch(torch.Generator().manual_seed(seed + 1), params)
        batch_again = objective.sample_batch(torch.Generator().manual_seed(seed + 1), params)
        assert _same_batch(batch, batch_again), "sample_batch with the same seed differs"

    before = _clone(params)
    value = objective.loss(params, batch)
    assert isinstance(value, torch.Tensor) and value.dim() == 0, "loss must be a 0-dim tensor"
    assert math.isfinite(float(value)), f"loss at the initial point is {float(value)}"
    grads = grad(objective.loss)(params, batch)
    _assert_same_params(params, before, "params after loss/grad (loss must be pure)")

    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    objective.loss(leaves, batch).backward()
    for key, g in grads.items():
        reference = leaves[key].grad
        assert reference is not None, f"no autograd gradient for '{key}'"
        assert torch.allclose(g, reference, rtol=1e-4, atol=1e-5), (
            f"torch.func.grad and autograd disagree on '{key}'"
        )

    metrics = objective.evaluate(params)
    assert "loss" in metrics, f"evaluate must report 'loss', got {sorted(metrics)}"
    assert all(math.isfinite(float(v)) for v in metrics.values()), f"non-finite: {metrics}"
    declared = objective.metric_direction()
    for metric, direction in declared.items():
        assert direction in ("min", "max"), f"direction of '{metric}' is {direction!r}"
    undeclared = sorted(set(metrics) - set(declared))
    assert not undeclared, (
        f"evaluate() reports {undeclared} but metric_direction() does not declare them"
        f" (it declares {sorted(declared)}): declare every metric, so that `check` can validate"
        " a task's score against them"
    )
    if objective.optimum is not None:
        assert metrics["loss"] >= objective.optimum - 1e-4 * (1 + abs(objective.optimum)), (
            f"loss {metrics['loss']} is below the declared optimum {objective.optimum}"
        )

    if objective.vmappable:
        other = objective.init_params(torch.Generator().manual_seed(seed + 7))
        batches = [batch, objective.sample_batch(torch.Generator().manual_seed(seed + 8), other)]
        has_batch = batches[0] is not None
        fn = vmap(objective.loss, in_dims=(0, 0) if has_batch else (0, None))
        stacked = fn(stack_points([params, other]), stack_batches(batches))
        singles = torch.stack(
            [objective.loss(params, batches[0]), objective.loss(other, batches[1])]
        )
        assert torch.allclose(stacked, singles, rtol=1e-4, atol=1e-5), (
            "vmapped loss differs from single evaluations; set vmappable = False if the loss"
            " cannot run under torch.func.vmap"
        )


def check_optimizer(optimizer: Optimizer, iterations: int = 30, seed: int = 0) -> None:
    """Check the :class:`Optimizer` contract on the reference quadratic.

    Checks: ``step`` returns new tensors and leaves its inputs untouched; the oracle's counters
    grow; the loss goes down over ``iterations`` from a seeded start; two runs with the same
    seed agree; for a :class:`FirstOrderOptimizer`, ``update`` is pure in params and grads and
    ``clone_state`` gives an independent state.
    """
    assert optimizer.name, f"{type(optimizer).__name__} has no 'name'"
    objective = reference_objective()
    support = optimizer.supports(objective)
    assert support.ok, f"optimizer '{optimizer.name}' refuses the reference objective: {support}"

    def run() -> tuple[Params, Oracle, float]:
        generator = torch.Generator().manual_seed(seed)
        params = objective.init_params(generator)
        state = optimizer.init(params)
        oracle = Oracle(objective, SerialExecutor(), generator)
        first = objective.evaluate(params)["loss"]
        for _ in range(iterations):
            before = _clone(params)
            new, state, _info = optimizer.step(params, state, oracle)
            _assert_same_params(params, before, "params passed to step (must not be mutated)")
            assert new.keys() == params.keys(), "step changed the parameter names"
            params = new
        return params, oracle, first

    params, oracle, first = run()
    last = objective.evaluate(params)["loss"]
    assert oracle.grad_evals >= iterations, "the optimizer did not use the oracle every step"
    assert oracle.sequential_steps >= 1, "the oracle counted no sequential step"
    assert last < first, f"loss did not decrease: {first} -> {last} in {iterations} iterations"
    params_again, _, _ = run()
    _assert_same_params(params, params_again, "two runs with the same seed", atol=1e-6)

    if isinstance(optimizer, FirstOrderOptimizer):
        params = objective.init_params(torch.Generator().manual_seed(seed))
        grads = grad(objective.loss)(params, None)
        state = optimizer.init(params)
        branch = optimizer.clone_state(state)
        p_before, g_before = _clone(params), _clone(grads)
        first_update, state = optimizer.update(params, grads, state)
        _assert_same_params(params, p_before, "params passed to update")
        _assert_same_params(grads, g_before, "grads passed to update")
        second_update, _ = optimizer.update(params, grads, branch)
        _assert_same_params(
            first_update, second_update, "update from a cloned state (clone_state must copy)"
        )


def check_executor(executor: Executor, points: int = 3, seed: int = 0) -> None:
    """Check an :class:`Executor` against the serial reference on a stochastic objective."""
    assert executor.name, f"{type(executor).__name__} has no 'name'"
    objective = reference_objective(noise=0.5)
    executor.bind(objective)
    generator = torch.Generator().manual_seed(seed)
    xs = [objective.init_params(generator) for _ in range(points)]
    batches = [objective.sample_batch(generator, x) for x in xs]
    reference = SerialExecutor().evaluate(objective, xs, batches)
    got = executor.evaluate(objective, xs, batches)
    executor.close()
    assert got.losses.shape == (points,), f"losses must have shape ({points},)"
    assert torch.allclose(got.losses, reference.losses, rtol=1e-5, atol=1e-6)
    assert len(got.grads) == points
    for mine, theirs in zip(got.grads, reference.grads, strict=True):
        _assert_same_params(mine, theirs, "gradients vs the serial executor", atol=1e-6)
