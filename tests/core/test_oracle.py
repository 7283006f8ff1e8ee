"""The oracle's finite check: one fused reduction, exact messages naming the offender."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch

from optkit.errors import DivergenceError
from optkit.executors import SerialExecutor, VmapExecutor
from optkit.interfaces import Objective, Params
from optkit.oracle import Oracle


class SqrtPlusLinear(Objective):
    """``sum(sqrt|w|) + k * sum(b)`` on ``{"w": (3,), "b": (2,)}``: the gradient in ``w`` is
    non-finite where a coordinate of w is 0 (the loss is not), the gradient in ``b`` is the
    constant k (huge but finite for k = 3e38), the loss is inf where b is."""

    name: ClassVar[str] = "test_sqrt_plus_linear"
    summary: ClassVar[str] = "oracle tests only"

    def __init__(self, k: float = 1.0) -> None:
        self.k = k

    def init_params(self, generator: torch.Generator) -> Params:
        return {"w": torch.ones(3), "b": torch.zeros(2)}

    def sample_batch(self, generator: torch.Generator, params: Params) -> None:
        return None

    def loss(self, params: Params, batch: Any) -> torch.Tensor:
        return torch.sqrt(params["w"].abs()).sum() + self.k * params["b"].sum()

    def evaluate(self, params: Params) -> dict[str, float]:
        return {"loss": float(self.loss(params, None))}


def oracle(executor: Any, k: float = 1.0) -> Oracle:
    objective = SqrtPlusLinear(k)
    objective.prepare(torch.device("cpu"), torch.float32)
    return Oracle(objective, executor, torch.Generator().manual_seed(0))


FINE = {"w": torch.ones(3), "b": torch.zeros(2)}


@pytest.mark.parametrize("executor", [SerialExecutor, VmapExecutor])
def test_non_finite_loss_and_gradient_messages(executor: type) -> None:
    orc = oracle(executor())
    orc.evaluate([FINE, FINE])
    inf_loss = {"w": torch.ones(3), "b": torch.tensor([0.0, float("inf")])}
    with pytest.raises(
        DivergenceError,
        match=r"^non-finite loss inf at gradient evaluation 4 \(sequential step 2\)$",
    ):
        orc.evaluate([FINE, inf_loss])
    zero_w = {"w": torch.tensor([1.0, 0.0, 1.0]), "b": torch.zeros(2)}
    with pytest.raises(
        DivergenceError,
        match=r"^non-finite gradient for parameter 'w' at gradient evaluation 7 \(sequential"
        r" step 3\)$",
    ):
        orc.evaluate([FINE, FINE, zero_w])


def test_huge_but_finite_gradients_pass() -> None:
    """The fused check sums L1 norms, which overflows here (2 x 3e38 > float32 max) although
    every value is finite: the exact per-tensor check then decides, and nothing is raised."""
    orc = oracle(SerialExecutor(), k=3e38)
    evaluation = orc.evaluate([FINE, FINE])
    assert float(evaluation.grads[1]["b"][0]) == pytest.approx(3e38, rel=1e-6)
    assert orc.grad_evals == 2
