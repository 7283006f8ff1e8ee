"""OptEx on a CUDA device: the captured proxy loop and the device solve against the eager
loop and the host solve, and the synchronisations of one iteration.

Marked ``gpu``: deselected on machines without CUDA (``tests/conftest.py``); run on the GPU
machine with ``python3 -m pytest tests/optex/test_cuda.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from optkit.interfaces import Params
from optkit.testing import count_syncs

from .test_fused import OptimizerRun

pytestmark = [pytest.mark.optex, pytest.mark.gpu]

CUDA = torch.device("cuda")


def trajectory(
    spec: dict[str, Any], device: torch.device, steps: int = 8
) -> tuple[list[Params], Any]:
    """Iterates of ``steps`` OptEx iterations on Rosenbrock(2000) on ``device`` and the final
    optimizer state."""
    run = OptimizerRun(spec, dim=2000, device=device)
    return [run.step() for _ in range(steps)], run.state


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
    proxy = state.engine
    assert proxy.graph is not None and not proxy.graph_failed and proxy.replays >= 3
    assert proxy.rule._true_graphs and not proxy.rule.true_graph_failed
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


@pytest.mark.parametrize(("device_solve", "most"), [(False, 3), (True, 2)])
def test_one_iteration_synchronises_at_most_a_few_times(device_solve: bool, most: int) -> None:
    run = OptimizerRun({**SPEC, "device_solve": device_solve}, dim=2000, device=CUDA)
    for _ in range(6):
        run.advance()
    assert count_syncs(run.advance) <= most
