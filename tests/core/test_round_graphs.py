"""The ``vmap`` executor's ``cuda_graph`` option (:mod:`optkit.round_graphs`): the graphed
round against the eager one on real objectives, fresh outputs, the fallback when a capture
fails, and what the option refuses.

The tests marked ``gpu`` are deselected on machines without CUDA (``tests/conftest.py``);
run them on the GPU machine with ``python3 -m pytest tests/core/test_round_graphs.py``.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import pytest
import torch

from optkit.errors import ConfigError
from optkit.executors import VmapExecutor, stack_batches, stack_points
from optkit.interfaces import Evaluation, Objective, Params
from optkit.registry import Registry, get_registry
from optkit.round_graphs import _sources, _static_inputs
from optkit.runner import run_loop
from optkit.tasks import Budget

CUDA = torch.device("cuda")


@pytest.fixture(scope="module")
def registry() -> Registry:
    return get_registry()


def rounds(
    objective: Objective, n: int, count: int, seed: int = 3
) -> list[tuple[list[Params], list[Any]]]:
    """``count`` rounds of N distinct points and their batches, seeded."""
    generator = torch.Generator(device=objective.device).manual_seed(seed)
    start = objective.init_params(torch.Generator().manual_seed(seed))
    out = []
    for r in range(count):
        points = [{k: v + 0.01 * (r + 1) * (i + 1) for k, v in start.items()} for i in range(n)]
        out.append((points, [objective.sample_batch(generator, p) for p in points]))
    return out


def assert_same(a: Evaluation, b: Evaluation) -> None:
    """Bit for bit: a replay runs the captured kernels on the same inputs."""
    assert torch.equal(a.losses, b.losses), (a.losses, b.losses)
    for ga, gb in zip(a.grads, b.grads, strict=True):
        assert ga.keys() == gb.keys()
        for key in ga:
            diff = (ga[key] - gb[key]).abs().max()
            assert torch.equal(ga[key], gb[key]), f"gradient '{key}' differs by {diff}"


# ----------------------------------------------------------------------------- CPU
def test_on_the_cpu_the_option_changes_nothing(registry: Registry) -> None:
    objective = registry.create("objective", {"name": "rosenbrock", "dim": 40, "noise": 0.5})
    objective.prepare(torch.device("cpu"), torch.float32)
    graphed, eager = VmapExecutor(cuda_graph=True), VmapExecutor()
    for n in (1, 4):
        for points, batches in rounds(objective, n, 3):
            assert_same(
                graphed.evaluate(objective, points, batches),
                eager.evaluate(objective, points, batches),
            )
    assert graphed.diagnostics() == []  # no round ran on a GPU


class Stateful(Objective):
    """A loss that reads a tensor the objective replaces between rounds: not graph-safe (it
    does not declare ``graph_safe``)."""

    name: ClassVar[str] = "test_stateful"
    summary: ClassVar[str] = "round-graph tests only"

    def __init__(self) -> None:
        self.scale = torch.ones(())

    def init_params(self, generator: torch.Generator) -> Params:
        return {"w": torch.ones(3)}

    def sample_batch(self, generator: torch.Generator, params: Params) -> None:
        self.scale = self.scale + 1.0  # a new tensor each round
        return None

    def loss(self, params: Params, batch: Any) -> torch.Tensor:
        return self.scale * (params["w"] ** 2).sum()

    def evaluate(self, params: Params) -> dict[str, float]:
        return {"loss": float((params["w"] ** 2).sum())}


def test_an_objective_that_does_not_declare_graph_safe_is_refused() -> None:
    support = VmapExecutor(cuda_graph=True).supports(Stateful())
    assert not support.ok
    assert "'test_stateful'" in support.reason and "graph_safe" in support.reason
    assert VmapExecutor().supports(Stateful()).ok


def test_a_cuda_graph_value_that_is_not_a_bool_names_the_key(registry: Registry) -> None:
    with pytest.raises(ConfigError, match="cuda_graph"):
        registry.create("executor", {"name": "vmap", "cuda_graph": "yes"})


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("batch_kind", ["tensor", "dict", "none"])
def test_a_round_is_copied_into_the_static_inputs_as_the_eager_path_stacks_it(
    n: int, batch_kind: str
) -> None:
    """One multi-tensor copy of a round's tensors into the static inputs gives what
    ``stack_points`` / ``stack_batches`` give (one point: the point and batch themselves)."""
    gen = torch.Generator().manual_seed(0)
    points = [{"a": torch.randn(2, 3, generator=gen), "b": torch.randn(4, generator=gen)}]
    points += [{k: v + i for k, v in points[0].items()} for i in range(1, n)]

    def batch(i: int) -> Any:
        if batch_kind == "tensor":
            return torch.randint(10, (5,), generator=gen)
        if batch_kind == "dict":
            return {"x": torch.randn(5, 2, generator=gen) + i, "y": torch.arange(5) * i}
        return None

    batches = [batch(i) for i in range(n)]
    params, static_batch, inputs = _static_inputs(points, batches)
    torch._foreach_copy_(inputs, _sources(points, batches))
    want_params = points[0] if n == 1 else stack_points(points)
    want_batch = batches[0] if n == 1 else stack_batches(batches)
    assert params.keys() == want_params.keys()
    for key in params:
        assert torch.equal(params[key], want_params[key])
    if batch_kind == "none":
        assert static_batch is None
    elif batch_kind == "tensor":
        assert torch.equal(static_batch, want_batch)
    else:
        for key in ("x", "y"):
            assert torch.equal(static_batch[key], want_batch[key])


# ----------------------------------------------------------------------------- GPU
GPU_SPECS = [
    {"name": "rosenbrock", "dim": 1000, "noise": 0.5},
    {"name": "fashion_mnist", "model": "cnn", "batch_size": 32},
    {"name": "shakespeare", "context": 16, "width": 32, "layers": 2, "heads": 2, "batch_size": 8},
]


def on_cuda(registry: Registry, spec: dict[str, Any]) -> Objective:
    objective = registry.create("objective", spec)
    objective.prepare(CUDA, torch.float32)
    return objective


@pytest.mark.gpu
@pytest.mark.parametrize("n", [1, 4])
@pytest.mark.parametrize("spec", GPU_SPECS, ids=lambda s: s["name"])
def test_graphed_rounds_equal_eager_rounds_and_stay_fresh(
    registry: Registry, spec: dict[str, Any], n: int
) -> None:
    """Round 1 warms up eagerly, round 2 captures and replays, rounds 3-6 replay; every round
    equals the eager executor's bit for bit, and an earlier round's evaluation keeps its
    values after later replays (the outputs are copied out)."""
    objective = on_cuda(registry, spec)
    graphed, eager = VmapExecutor(cuda_graph=True), VmapExecutor()
    kept: list[tuple[Evaluation, Evaluation]] = []
    for points, batches in rounds(objective, n, 6):
        got = graphed.evaluate(objective, points, batches)
        want = eager.evaluate(objective, points, batches)
        assert_same(got, want)
        kept.append((got, want))
    for got, want in kept:
        assert_same(got, want)
    (events,) = graphed.diagnostics()
    assert events == {
        "event": "cuda_graph",
        "captured": 1,
        "replays": 5,
        "eager": 1,
        "failure": None,
    }


class SyncingRosenbrock(Objective):
    """Rosenbrock whose loss reads a value on the host (a sync a capture cannot contain), yet
    declares ``graph_safe``: the capture fails and the rounds run eagerly."""

    name: ClassVar[str] = "test_syncing"
    summary: ClassVar[str] = "round-graph tests only"
    graph_safe: ClassVar[bool] = True

    def init_params(self, generator: torch.Generator) -> Params:
        return {"x": torch.zeros(10, device=self.device)}

    def sample_batch(self, generator: torch.Generator, params: Params) -> None:
        return None

    def loss(self, params: Params, batch: Any) -> torch.Tensor:
        x = params["x"]
        value = (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()
        if float(value.detach()) < 0:  # never true; the read itself breaks a capture
            value = -value
        return value

    def evaluate(self, params: Params) -> dict[str, float]:
        return {"loss": float(self.loss(params, None))}


@pytest.mark.gpu
def test_a_failed_capture_warns_once_and_runs_eagerly(caplog: pytest.LogCaptureFixture) -> None:
    objective = SyncingRosenbrock()
    objective.prepare(CUDA, torch.float32)
    graphed, eager = VmapExecutor(cuda_graph=True), VmapExecutor()
    with caplog.at_level(logging.WARNING, logger="optkit.cuda_graphs"):
        for points, batches in rounds(objective, 1, 4):
            assert_same(
                graphed.evaluate(objective, points, batches),
                eager.evaluate(objective, points, batches),
            )
    warnings = [r for r in caplog.records if "capture" in r.getMessage()]
    assert len(warnings) == 1 and "runs eagerly from now on" in warnings[0].getMessage()
    (events,) = graphed.diagnostics()
    assert events["replays"] == 0 and events["eager"] == 4 and events["failure"]


@pytest.mark.gpu
@pytest.mark.parametrize(
    "optimizer",
    [
        {"name": "adam", "lr": 1e-3},
        {"name": "optex", "base": "adam", "base_config": {"lr": 1e-3}, "parallelism": 4},
        {"name": "data_parallel", "base": "adam", "base_config": {"lr": 1e-3}, "parallelism": 4},
    ],
    ids=lambda s: s["name"],
)
def test_a_run_with_graphed_rounds_equals_one_without(
    registry: Registry, optimizer: dict[str, Any]
) -> None:
    """The runner's loop, end to end on the Fashion-MNIST CNN: the same rows, and the cell's
    executor reports its replays."""
    spec = {
        "name": "fashion_mnist",
        "model": "cnn",
        "batch_size": 32,
        "eval_train_size": 256,
        "eval_test_size": 256,
    }
    rows = {}
    for graph in (False, True):
        objective = on_cuda(registry, spec)
        executor = VmapExecutor(cuda_graph=graph)
        row = run_loop(
            objective,
            registry.create("optimizer", optimizer),
            executor,
            0,
            Budget(12, eval_every=6),
            "loss",
        )
        rows[graph] = {k: row[k] for k in ("loss", "train_loss", "test_error")}
        if graph:
            (events,) = executor.diagnostics()
            assert events["replays"] >= 10 and events["failure"] is None
    assert rows[True] == rows[False]
