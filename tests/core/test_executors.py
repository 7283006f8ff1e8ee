"""The built-in executors' one-point path (``value_and_grad``: ``torch.autograd.grad`` on
detached leaves, no ``torch.func`` transform) against the batched ``vmap`` path and against
``torch.func.grad_and_value`` itself, on real objectives from the registry; and the oracle's
finite check on that path."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch
from torch.func import grad_and_value

from optkit.errors import DivergenceError
from optkit.executors import SerialExecutor, VmapExecutor, value_and_grad
from optkit.interfaces import Evaluation, Objective, Params
from optkit.oracle import Oracle
from optkit.registry import Registry, get_registry
from optkit.runner import run_loop
from optkit.tasks import Budget

SPECS = [
    {"name": "rosenbrock", "dim": 50, "noise": 0.5},  # a tensor batch per point
    {"name": "ackley", "dim": 30},  # no batch (exact gradients)
]


@pytest.fixture(scope="module")
def registry() -> Registry:
    return get_registry()


def prepared(registry: Registry, spec: dict[str, Any], dtype: torch.dtype) -> Objective:
    objective = registry.create("objective", spec)
    objective.prepare(torch.device("cpu"), dtype)
    return objective


def points_and_batches(objective: Objective, n: int) -> tuple[list[Params], list[Any]]:
    """N distinct points (moved from the start point) and a batch for each, seeded."""
    generator = torch.Generator().manual_seed(7)
    start = objective.init_params(generator)
    points = [{k: v + 0.05 * i for k, v in start.items()} for i in range(n)]
    return points, [objective.sample_batch(generator, p) for p in points]


def same(a: Evaluation, b: Evaluation, *, exact: bool) -> None:
    """Equal losses and gradients: bit for bit when ``exact``, else up to summation order."""
    check = torch.testing.assert_close if not exact else _equal
    check(a.losses, b.losses)
    assert len(a.grads) == len(b.grads)
    for ga, gb in zip(a.grads, b.grads, strict=True):
        assert ga.keys() == gb.keys()
        for key in ga:
            assert ga[key].shape == gb[key].shape and not ga[key].requires_grad
            check(ga[key], gb[key])


def _equal(a: torch.Tensor, b: torch.Tensor) -> None:
    assert torch.equal(a, b), (a, b)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s["name"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_point_path_equals_grad_and_value_and_the_batched_path(
    registry: Registry, spec: dict[str, Any], dtype: torch.dtype
) -> None:
    """At each of 4 points: the one-point round of ``vmap`` and of ``serial`` gives exactly
    ``torch.func.grad_and_value(objective.loss)``'s loss and gradient (the same kernels run),
    and the same as that point's entry in one batched ``vmap`` round of all 4 (up to
    summation order)."""
    objective = prepared(registry, spec, dtype)
    points, batches = points_and_batches(objective, 4)
    batched = VmapExecutor().evaluate(objective, points, batches)
    assert batched.losses.shape == (4,)
    vmap_one, serial_one = VmapExecutor(), SerialExecutor()
    for i, (point, batch) in enumerate(zip(points, batches, strict=True)):
        before = {k: v.clone() for k, v in point.items()}
        g, value = grad_and_value(objective.loss)(point, batch)
        reference = Evaluation(value.detach().reshape(1), [{k: v.detach() for k, v in g.items()}])
        for executor in (vmap_one, serial_one):
            got = executor.evaluate(objective, [point], [batch])
            assert got.losses.shape == (1,) and got.losses.dtype == dtype
            same(got, reference, exact=True)
            entry = Evaluation(batched.losses[i : i + 1], [batched.grads[i]])
            same(got, entry, exact=False)
        for key, tensor in point.items():  # the point is not modified and gets no .grad
            assert torch.equal(tensor, before[key]) and tensor.grad is None
    # the serial executor's rounds of N points are the one-point path N times
    same(SerialExecutor().evaluate(objective, points, batches), batched, exact=False)


@pytest.mark.vision
def test_one_point_path_on_a_network_with_minibatches(registry: Registry) -> None:
    """The MNIST MLP (several parameter tensors, index minibatches drawn by the oracle's
    generator): the one-point round equals ``grad_and_value`` exactly and the batched round's
    entries up to summation order."""
    spec = {"name": "mnist", "model": "mlp", "batch_size": 16, "train_size": 256}
    objective = prepared(
        registry, {**spec, "eval_train_size": 32, "eval_test_size": 32}, torch.float32
    )
    points, batches = points_and_batches(objective, 3)
    batched = VmapExecutor().evaluate(objective, points, batches)
    for i, (point, batch) in enumerate(zip(points, batches, strict=True)):
        g, value = grad_and_value(objective.loss)(point, batch)
        reference = Evaluation(value.detach().reshape(1), [{k: v.detach() for k, v in g.items()}])
        got = VmapExecutor().evaluate(objective, [point], [batch])
        same(got, reference, exact=True)
        same(got, Evaluation(batched.losses[i : i + 1], [batched.grads[i]]), exact=False)


class Partial(Objective):
    """``sum(w^2)`` on ``{"w": (3,), "unused": (2,)}``; ``constant`` makes the loss a constant
    (no parameter used); ``vector`` makes it return ``w^2`` (not a scalar)."""

    name: ClassVar[str] = "test_partial"
    summary: ClassVar[str] = "executor tests only"

    def __init__(self, mode: str = "normal") -> None:
        self.mode = mode

    def init_params(self, generator: torch.Generator) -> Params:
        return {"w": torch.tensor([1.0, -2.0, 3.0]), "unused": torch.ones(2)}

    def sample_batch(self, generator: torch.Generator, params: Params) -> None:
        return None

    def loss(self, params: Params, batch: Any) -> torch.Tensor:
        if self.mode == "constant":
            return torch.tensor(4.0)
        if self.mode == "vector":
            return params["w"] ** 2
        return (params["w"] ** 2).sum()

    def evaluate(self, params: Params) -> dict[str, float]:
        return {"loss": float(self.loss(params, None))}


def test_unused_parameters_and_constant_losses_get_zero_gradients_as_in_torch_func() -> None:
    for mode in ("normal", "constant"):
        objective = Partial(mode)
        point = objective.init_params(torch.Generator())
        value, grads = value_and_grad(objective, point, None)
        g, want = grad_and_value(objective.loss)(point, None)
        assert torch.equal(value, want) and value.dim() == 0
        for key in point:
            assert torch.equal(grads[key], g[key]), (mode, key)
        assert torch.equal(grads["unused"], torch.zeros(2))


def test_gradients_are_computed_under_no_grad_and_a_non_scalar_loss_is_refused() -> None:
    objective = Partial()
    point = objective.init_params(torch.Generator())
    with torch.no_grad():  # a caller's grad mode does not matter, as with grad_and_value
        _, grads = value_and_grad(objective, point, None)
    assert torch.equal(grads["w"], torch.tensor([2.0, -4.0, 6.0]))
    with pytest.raises(
        RuntimeError,
        match=r"objective 'test_partial': loss\(params, batch\) must return a scalar \(0-dim\)"
        r" tensor, got a tensor of shape \(3,\)",
    ):
        VmapExecutor().evaluate(Partial("vector"), [point], [None])


class _ClampedRelu(torch.autograd.Function):
    """An old-style autograd.Function (no ``setup_context``): plain autograd runs it,
    ``torch.func`` transforms refuse it."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return g * (x > 0)


class OldStyle(Partial):
    name: ClassVar[str] = "test_old_style"

    def loss(self, params: Params, batch: Any) -> torch.Tensor:
        return _ClampedRelu.apply(params["w"]).sum() + params["unused"].sum()


def test_one_point_rounds_do_not_go_through_torch_func() -> None:
    """A loss ``torch.func`` cannot transform still evaluates in a one-point round of either
    executor (and in every round of ``serial``): the path is plain autograd."""
    objective = OldStyle()
    point = objective.init_params(torch.Generator())
    with pytest.raises(RuntimeError, match="setup_context"):
        grad_and_value(objective.loss)(point, None)
    for executor in (VmapExecutor(), SerialExecutor()):
        got = executor.evaluate(objective, [point], [None])
        assert torch.equal(got.grads[0]["w"], torch.tensor([1.0, 0.0, 1.0]))
        assert torch.equal(got.grads[0]["unused"], torch.ones(2))
        assert float(got.losses[0]) == 4.0 + 2.0
    assert SerialExecutor().evaluate(objective, [point, point], [None, None]).losses.shape == (2,)


@pytest.mark.parametrize("executor", [SerialExecutor, VmapExecutor])
def test_one_point_rounds_raise_the_same_divergence_errors(
    registry: Registry, executor: type
) -> None:
    """Rosenbrock from the registry: an infinite coordinate makes the loss inf, and the
    oracle's one-point round says so, with its counts; a round at a finite point then
    passes. Through the registered ``adam`` and ``run_loop`` the same error ends the run."""
    objective = prepared(registry, {"name": "rosenbrock", "dim": 5}, torch.float32)
    oracle = Oracle(objective, executor(), torch.Generator().manual_seed(0))
    fine = {"x": torch.zeros(5)}
    oracle.evaluate([fine])
    bad = {"x": torch.tensor([0.0, float("inf"), 0.0, 0.0, 0.0])}
    with pytest.raises(
        DivergenceError,
        match=r"^non-finite loss inf at gradient evaluation 2 \(sequential step 2\)$",
    ):
        oracle.evaluate([bad])
    assert (oracle.grad_evals, oracle.sequential_steps) == (2, 2)
    oracle.evaluate([fine])
    assert (oracle.grad_evals, oracle.sequential_steps) == (3, 3)

    adam = registry.create("optimizer", {"name": "adam", "lr": 0.1})
    with pytest.raises(DivergenceError, match=r"^non-finite loss inf at gradient evaluation 1 "):
        adam.step(bad, adam.init(bad), Oracle(objective, executor(), torch.Generator()))
    with pytest.raises(DivergenceError, match="non-finite loss inf at gradient evaluation"):
        run_loop(  # lr 1e6 on rosenbrock overflows float32 within a few steps
            objective,
            registry.create("optimizer", {"name": "sgd", "lr": 1e6}),
            executor(),
            0,
            Budget(50, eval_every=50),
            "loss",
        )


@pytest.mark.parametrize("executor", ["serial", "vmap"])
def test_adam_steps_from_params_that_require_grad_record_no_graph(
    registry: Registry, executor: str
) -> None:
    """The registered ``adam`` over the one-point path (either executor), started from
    leaves that require grad (so its slots are loaded, not reused): the same iterates and
    losses as a plain ``torch.optim.Adam`` loop, bit for bit, and every returned tensor is a
    fresh value outside any autograd graph; the start leaves are left untouched."""
    objective = prepared(registry, {"name": "rosenbrock", "dim": 20, "noise": 0.3}, torch.float32)
    gen, plain_gen = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    start = {k: v.requires_grad_(True) for k, v in objective.init_params(gen).items()}
    objective.init_params(plain_gen)
    kept = {k: v.detach().clone() for k, v in start.items()}
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in start.items()}
    plain = torch.optim.Adam(list(leaves.values()), lr=0.05)
    adam = registry.create("optimizer", {"name": "adam", "lr": 0.05})
    oracle = Oracle(objective, registry.create("executor", {"name": executor}), gen)
    params, state = start, adam.init(start)
    for _ in range(5):
        params, state, info = adam.step(params, state, oracle)
        plain.zero_grad()
        loss = objective.loss(leaves, objective.sample_batch(plain_gen, leaves))
        loss.backward()
        plain.step()
        assert info.loss == float(loss.detach())
        for key, value in params.items():
            assert not value.requires_grad and value.grad_fn is None
            assert torch.equal(value, leaves[key].detach())
    assert (oracle.grad_evals, oracle.sequential_steps) == (5, 5)
    for key, value in start.items():
        assert torch.equal(value.detach(), kept[key]) and value.grad is None
