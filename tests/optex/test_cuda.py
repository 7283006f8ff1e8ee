"""OptEx on a CUDA device: the captured proxy loop and the device solve against the eager
loop and the host solve, and the synchronisations of one iteration.

Marked ``gpu``: deselected on machines without CUDA (``tests/conftest.py``); run on the GPU
machine with ``python3 -m pytest tests/optex/test_cuda.py``.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

from optkit.interfaces import Params
from optkit.oracle import Oracle
from optkit.registry import get_registry

pytestmark = [pytest.mark.optex, pytest.mark.gpu]

REG = get_registry()
CUDA = torch.device("cuda")


def trajectory(
    spec: dict[str, Any], device: torch.device, steps: int = 8, dim: int = 2000
) -> tuple[list[Params], Any]:
    """Iterates of ``steps`` OptEx iterations on Rosenbrock(dim) on ``device`` and the final
    optimizer state."""
    objective = REG.create("objective", {"name": "rosenbrock", "dim": dim})
    objective.prepare(device, torch.float32)
    opt = REG.create("optimizer", spec)
    gen = torch.Generator().manual_seed(1)
    params = objective.init_params(gen)
    state = opt.init(params)
    oracle = Oracle(objective, REG.create("executor", {"name": "vmap"}), gen)
    out = []
    for _ in range(steps):
        params, state, _ = opt.step(params, state, oracle)
        out.append({k: v.detach().cpu().clone() for k, v in params.items()})
    return out, state


SPEC = {"name": "optex", "base": "adam", "base_config": {"lr": 0.01}, "parallelism": 8}


def _close(a: list[Params], b: list[Params], tol: float) -> None:
    """Trajectories agree: each iterate's distance between ``a`` and ``b`` is at most ``tol``
    times the distance ``a`` has travelled from its first iterate. (Elementwise checks fail
    for honest reasons: Adam divides by the root of the second moment, so float32 rounding
    in a near-zero gradient coordinate can move that coordinate by up to lr.)"""
    for pa, pb in zip(a, b, strict=True):
        for key in pa:
            travelled = float((pa[key] - a[0][key]).norm())
            gap = float((pa[key] - pb[key]).norm())
            assert gap <= tol * max(travelled, 1e-3), (key, gap, travelled)


@pytest.mark.parametrize("next_iterate", ["last", "best"])
@pytest.mark.parametrize("device_solve", [False, True])
def test_the_captured_loop_gives_the_eager_iterates_and_is_replayed(
    device_solve: bool, next_iterate: str
) -> None:
    spec = {**SPEC, "device_solve": device_solve, "next_iterate": next_iterate}
    graphed, state = trajectory({**spec, "cuda_graph": True}, CUDA)
    eager, _ = trajectory({**spec, "cuda_graph": False}, CUDA)
    _close(graphed, eager, 1e-3)
    proxy = state.fused
    assert proxy.graph is not None and not proxy.graph_failed and proxy.replays >= 3
    assert proxy._true_graphs and not proxy.true_graph_failed
    if device_solve:
        assert proxy.solve_in_graph
        assert len(state.estimator._append_graphs) >= 1 and not state.estimator.append_graph_failed


def test_the_device_solve_is_the_default_on_cuda() -> None:
    _, state = trajectory(SPEC, CUDA, steps=3)
    assert state.estimator.device_solve


def test_the_device_solve_gives_the_host_solve_iterates_on_cuda() -> None:
    host, _ = trajectory({**SPEC, "device_solve": False}, CUDA)
    device, state = trajectory({**SPEC, "device_solve": True}, CUDA)
    _close(host, device, 1e-2)
    assert state.estimator.fallbacks == 0


def test_cuda_iterates_match_the_cpu() -> None:
    cpu, _ = trajectory(SPEC, torch.device("cpu"))
    gpu, _ = trajectory({**SPEC, "device_solve": True}, CUDA)
    _close(cpu, gpu, 1e-2)


def _syncs(fn: Any) -> int:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.parametrize(("device_solve", "most"), [(False, 3), (True, 2)])
def test_one_iteration_synchronises_at_most_a_few_times(device_solve: bool, most: int) -> None:
    objective = REG.create("objective", {"name": "rosenbrock", "dim": 2000})
    objective.prepare(CUDA, torch.float32)
    opt = REG.create("optimizer", {**SPEC, "device_solve": device_solve})
    gen = torch.Generator().manual_seed(1)
    params = objective.init_params(gen)
    state = opt.init(params)
    oracle = Oracle(objective, REG.create("executor", {"name": "vmap"}), gen)
    for _ in range(6):
        params, state, _ = opt.step(params, state, oracle)
    box = [params, state]

    def step() -> None:
        box[0], box[1], _ = opt.step(box[0], box[1], oracle)

    assert _syncs(step) <= most
