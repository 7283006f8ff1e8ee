"""The oracle's finite check: one fused reduction, exact messages naming the offender."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import pytest
import torch

from optkit.errors import DivergenceError
from optkit.executors import SerialExecutor, VmapExecutor
from optkit.interfaces import Objective, Params
from optkit.oracle import Oracle, finite_probe, l1_total


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


def test_l1_total_matches_torch_total_norm_and_propagates_non_finite() -> None:
    """The fused sum equals ``get_total_norm(norm_type=1)`` on one dtype (the fast path), on
    mixed dtypes (the grouped path) and on one tensor; a NaN or inf anywhere makes it
    non-finite, including in a strided view (as the vmap executor's gradients are)."""
    gen = torch.Generator().manual_seed(0)
    same = [torch.randn(5, generator=gen), torch.randn(3, 4, generator=gen)[:, 1], torch.randn(())]
    mixed = [*same, torch.randn(6, dtype=torch.float64, generator=gen)]
    for tensors in (same, mixed, same[:1]):
        torch.testing.assert_close(
            l1_total(tensors).double(),
            torch.nn.utils.get_total_norm(tensors, norm_type=1.0).double(),
        )
    for bad in (float("nan"), float("inf"), -float("inf")):
        stacked = torch.zeros(3, 4)
        stacked[2, 1] = bad
        views = [stacked[i] for i in range(3)]
        assert not math.isfinite(float(l1_total([torch.zeros(2), *views])))
        assert not math.isfinite(float(l1_total([*mixed, stacked[2]])))


def test_finite_probe_is_non_finite_exactly_when_a_value_is() -> None:
    """The CPU probe (plain sums, a one-element tensor added as it is) over a loss vector, a
    one-point loss and gradients of several shapes, one a strided view: finite for finite
    values (and equal to their sum), non-finite for a NaN, inf or -inf anywhere, also when
    an inf and a -inf sit in different tensors. Complex tensors go to :func:`l1_total`."""
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        tensors = [
            torch.randn(3, generator=gen, dtype=dtype),  # N = 3 losses
            torch.randn(1, generator=gen, dtype=dtype),  # N = 1 loss
            torch.randn(7, 5, generator=gen, dtype=dtype)[:, 2],
            torch.randn(4, 6, generator=gen, dtype=dtype),
            torch.randn((), generator=gen, dtype=dtype),
        ]
        probe = finite_probe(tensors)
        assert probe.numel() == 1 and not probe.requires_grad
        want = sum(float(t.sum()) for t in tensors)
        assert float(probe) == pytest.approx(want, rel=1e-5, abs=1e-5)
        for which in range(len(tensors)):
            for bad in (float("nan"), float("inf"), -float("inf")):
                spoiled = [t.clone() for t in tensors]
                spoiled[which].view(-1)[-1] = bad
                assert not math.isfinite(float(finite_probe(spoiled))), (dtype, which, bad)
        split = [t.clone() for t in tensors]
        split[2][0], split[3][1, 1] = float("inf"), -float("inf")
        assert math.isnan(float(finite_probe(split)))
    mixed = [torch.tensor([1.0, -2.0]), torch.tensor([3.0 + 4.0j])]
    assert float(finite_probe(mixed)) == float(l1_total(mixed)) == 8.0


@pytest.mark.parametrize("n", [1, 8])
def test_vmap_round_of_many_tensors_names_the_offender(n: int) -> None:
    """A round of N points over several tensors (gradients as views into the vmapped stack):
    a non-finite gradient in the last point is found and named, whatever N."""
    orc = oracle(VmapExecutor())
    points = [FINE] * (n - 1) + [{"w": torch.tensor([1.0, 1.0, 0.0]), "b": torch.zeros(2)}]
    with pytest.raises(DivergenceError, match=r"parameter 'w' at gradient evaluation " + str(n)):
        orc.evaluate(points)


@pytest.mark.gpu  # deselected without CUDA (tests/conftest.py); runs with `pytest -m gpu`
def test_a_round_synchronises_the_host_once_on_cuda() -> None:
    from optkit.testing import count_syncs

    objective = SqrtPlusLinear()
    objective.prepare(torch.device("cuda"), torch.float32)
    orc = Oracle(objective, VmapExecutor(), torch.Generator().manual_seed(0))
    fine = {k: v.cuda() for k, v in FINE.items()}
    orc.evaluate([fine] * 4)
    assert count_syncs(lambda: orc.evaluate([fine] * 4)) == 1


def test_the_timed_oracle_counts_rounds_and_seconds_and_returns_the_same_evaluation() -> None:
    from optkit.testing import TimedOracle

    objective = SqrtPlusLinear()
    objective.prepare(torch.device("cpu"), torch.float32)
    timed = TimedOracle(objective, VmapExecutor(), torch.Generator().manual_seed(0))
    plain = Oracle(objective, VmapExecutor(), torch.Generator().manual_seed(0))
    got, want = timed.evaluate([FINE, FINE]), plain.evaluate([FINE, FINE])
    timed.evaluate([FINE])
    assert timed.rounds == 2 and timed.spent > 0.0
    assert torch.equal(got.losses, want.losses)


def deferred_oracle(device: str = "cpu") -> Oracle:
    objective = SqrtPlusLinear()
    objective.prepare(torch.device(device), torch.float32)
    return Oracle(objective, SerialExecutor(), torch.Generator().manual_seed(0), defer_check=True)


ZERO_W = {"w": torch.tensor([1.0, 0.0, 1.0]), "b": torch.zeros(2)}


def test_a_deferred_check_raises_at_the_next_round_with_the_bad_rounds_counters() -> None:
    """``defer_check``: a non-finite round returns; the next round, once its own work is
    queued, raises the message the immediate check gives, with the bad round's counters."""
    immediate = oracle(SerialExecutor())
    immediate.evaluate([FINE])
    with pytest.raises(DivergenceError) as now:
        immediate.evaluate([FINE, ZERO_W])
    orc = deferred_oracle()
    orc.evaluate([FINE])
    orc.evaluate([FINE, ZERO_W])  # round 2: not read yet
    assert (orc.grad_evals, orc.sequential_steps) == (3, 2)
    with pytest.raises(DivergenceError) as late:
        orc.evaluate([FINE])
    assert str(late.value) == str(now.value)
    assert "gradient evaluation 3 (sequential step 2)" in str(late.value)
    assert (orc.grad_evals, orc.sequential_steps) == (4, 3)  # round 3 was queued first
    orc.settle()  # round 3 itself was finite


def test_settle_reads_the_deferred_round_once() -> None:
    orc = deferred_oracle()
    orc.evaluate([FINE])
    orc.settle()  # finite: nothing
    inf_loss = {"w": torch.ones(3), "b": torch.tensor([0.0, float("inf")])}
    orc.evaluate([inf_loss])
    with pytest.raises(DivergenceError, match=r"^non-finite loss inf at gradient evaluation 2"):
        orc.settle()
    orc.settle()  # read once: a second settle has nothing left to check


def test_step_info_reads_a_tensor_loss_as_a_float_when_asked() -> None:
    from optkit.interfaces import StepInfo

    info = StepInfo(loss=torch.tensor([2.5]), extras={"a": 1.0})
    assert info.loss == 2.5 and isinstance(info.loss, float)
    assert StepInfo(loss=0.5).loss == 0.5
    assert math.isnan(StepInfo().loss) and StepInfo().extras == {}


@pytest.mark.gpu  # deselected without CUDA (tests/conftest.py); runs with `pytest -m gpu`
def test_a_deferred_round_does_not_synchronise_the_host_on_cuda() -> None:
    from optkit.testing import count_syncs

    orc = deferred_oracle("cuda")
    fine = {k: v.cuda() for k, v in FINE.items()}
    orc.evaluate([fine])
    orc.settle()
    assert count_syncs(lambda: orc.evaluate([fine])) == 0
    orc.settle()
    orc.evaluate([{k: v.cuda() for k, v in ZERO_W.items()}])
    with pytest.raises(DivergenceError, match=r"parameter 'w' at gradient evaluation 3"):
        orc.settle()
    # two rounds in flight: the finite round staged after a bad one does not overwrite the
    # bad round's pinned copy
    orc.evaluate([{k: v.cuda() for k, v in ZERO_W.items()}])
    with pytest.raises(DivergenceError, match=r"parameter 'w' at gradient evaluation 4"):
        orc.evaluate([fine])
    assert len(orc._stagings) == 2


class NaNAtDraw(Objective):
    """``sum(x^2) * c`` where the k-th minibatch draw gives c = NaN (else 1): the loss of
    iteration k of a first-order run is NaN."""

    name: ClassVar[str] = "test_nan_at_draw"
    summary: ClassVar[str] = "oracle tests only"

    def __init__(self, k: int) -> None:
        self.k, self.draws = k, 0

    def init_params(self, generator: torch.Generator) -> Params:
        return {"x": torch.ones(4, device=self.device)}

    def sample_batch(self, generator: torch.Generator, params: Params) -> torch.Tensor:
        self.draws += 1
        return torch.tensor(float("nan") if self.draws == self.k else 1.0, device=self.device)

    def loss(self, params: Params, batch: Any) -> torch.Tensor:
        return (params["x"] ** 2).sum() * batch

    def evaluate(self, params: Params) -> dict[str, float]:
        return {"loss": float((params["x"] ** 2).sum())}


@pytest.mark.gpu  # deselected without CUDA (tests/conftest.py); runs with `pytest -m gpu`
@pytest.mark.parametrize("k", [3, 10])
def test_run_loop_on_cuda_raises_for_a_nan_round_even_the_last(k: int) -> None:
    """On CUDA ``run_loop`` defers the oracle's check; a NaN at iteration 3 (between
    evaluation rows) or 10 (the last) is still raised, naming that round."""
    from optkit.registry import get_registry
    from optkit.runner import run_loop
    from optkit.tasks import Budget

    objective = NaNAtDraw(k)
    objective.prepare(torch.device("cuda"), torch.float32)
    adam = get_registry().create("optimizer", {"name": "adam", "lr": 0.1})
    with pytest.raises(DivergenceError, match=rf"non-finite loss nan at gradient evaluation {k} "):
        run_loop(objective, adam, SerialExecutor(), 0, Budget(10, eval_every=5), "loss")
