"""The gradient oracle an optimizer sees: evaluations through an executor, with counters."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from optkit.errors import DivergenceError
from optkit.interfaces import Batch, Evaluation, Executor, Objective, Params, RoundBatches


class Oracle:
    """Evaluates the objective's stochastic loss and gradient at one or several points.

    Each point gets its own minibatch, drawn with the cell's generator. Counting:

    * ``grad_evals`` grows by N for every point evaluated;
    * ``sequential_steps`` grows by one per call (one *parallel round*: the N evaluations run
      side by side), unless the call passes ``sequential=False``: that is for the idealized
      ``target`` baseline, whose extra true gradients are by definition free of wall-clock.

    Non-finite losses or gradients raise :class:`~optkit.errors.DivergenceError`, so no
    optimizer ever averages NaN into its state silently.
    """

    def __init__(
        self,
        objective: Objective,
        executor: Executor,
        generator: torch.Generator,
        *,
        defer_check: bool = False,
    ) -> None:
        """Args:
        defer_check: read each round's finite check once the *next* round's work is queued
            (or at :meth:`settle`) instead of at once. On a GPU the host then waits for a
            round only while the device already holds the next one, so the device's queue
            never drains between steps (a plain training loop never waits at all). The
            round's losses and gradients are kept until then, for the exact message (so two
            rounds' gradients are alive while the next one is evaluated), and a
            non-finite round is reported with its own counters, one round late (the next
            round has been evaluated and counted by then): a caller that defers must call
            :meth:`settle` before it trusts or records a result
            (:func:`optkit.runner.run_loop` does at every evaluation and at the end).
        """
        self.objective = objective
        self.executor = executor
        self.generator = generator
        self.grad_evals = 0
        self.sequential_steps = 0
        self.defer_check = defer_check
        # an objective that draws whole rounds (RoundBatches): checked once, not every round
        self._sample_round = objective.sample_round if isinstance(objective, RoundBatches) else None
        self._pending: _PendingCheck | None = None
        # two pinned buffers on a GPU, used in turn: a round is staged while the one before
        # it is still unread
        self._stagings: list[_HostStaging] = []

    def sample_batches(self, points: Sequence[Params], sequential: bool = True) -> list[Batch]:
        """One batch per point, drawn in order with the cell's generator (by the objective's
        :meth:`~optkit.interfaces.RoundBatches.sample_round` where it draws whole rounds)."""
        if self._sample_round is not None:
            return self._sample_round(self.generator, points, sequential)
        return [self.objective.sample_batch(self.generator, p) for p in points]

    def evaluate(
        self,
        points: Sequence[Params],
        *,
        batches: Sequence[Batch] | None = None,
        sequential: bool = True,
    ) -> Evaluation:
        """Loss and gradient at each of ``points`` (N >= 1) in one parallel round.

        Args:
            points: N params dicts (not modified).
            batches: the N batches to use; drawn with :meth:`sample_batches` when omitted.
            sequential: count this round as one sequential step (``False`` only for
                idealized baselines).

        Returns:
            :class:`Evaluation` with ``losses`` of shape ``(N,)`` and N gradient dicts.
        """
        if not points:
            raise ValueError("Oracle.evaluate needs at least one point")
        if batches is None:
            batches = self.sample_batches(points, sequential)
        evaluation = self.executor.evaluate(self.objective, points, batches)
        self.grad_evals += len(points)
        if sequential:
            self.sequential_steps += 1
        probe = finite_probe(_checked_tensors(evaluation))
        staging = None
        if self.defer_check and probe.device.type == "cuda":
            staging = self._free_staging(probe)
        pending = _PendingCheck(probe, evaluation, self.grad_evals, self.sequential_steps, staging)
        if self.defer_check:
            # the round before this one is read only now, with this round's work queued
            previous, self._pending = self._pending, pending
            if previous is not None:
                previous.raise_if_non_finite()
        else:
            pending.raise_if_non_finite()
        return evaluation

    def _free_staging(self, probe: torch.Tensor) -> _HostStaging:
        """The pinned buffer the unread round (if any) does not hold."""
        busy = self._pending.staging if self._pending is not None else None
        for staging in self._stagings:
            if staging is not busy and staging.fits(probe):
                return staging
        self._stagings = [s for s in self._stagings if s is busy] + [_HostStaging(probe)]
        return self._stagings[-1]

    def settle(self) -> None:
        """Read the finite check of a round whose check was deferred (``defer_check``), if
        any: raises :class:`~optkit.errors.DivergenceError` for it, naming its counters.
        Without a deferred round this does nothing."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.raise_if_non_finite()


def _checked_tensors(evaluation: Evaluation) -> list[torch.Tensor]:
    tensors = [evaluation.losses]
    for grads in evaluation.grads:
        tensors.extend(grads.values())
    return tensors


class _HostStaging:
    """A pinned host copy of a probe and an event behind it: two per oracle, reused in turn
    (a round stages its probe while the round before it is still unread)."""

    def __init__(self, probe: torch.Tensor) -> None:
        self.host = torch.empty(probe.shape, dtype=probe.dtype, pin_memory=True)
        self.event = torch.cuda.Event()

    def fits(self, probe: torch.Tensor) -> bool:
        return self.host.shape == probe.shape and self.host.dtype == probe.dtype

    def stage(self, probe: torch.Tensor) -> torch.Tensor:
        """Queue the copy of ``probe`` without blocking; returns the host tensor it lands in."""
        self.host.copy_(probe, non_blocking=True)  # on the probe's device's current stream
        self.event.record(torch.cuda.current_stream(probe.device))
        return self.host


class _PendingCheck:
    """One round's finite check, started on the device and read by
    :meth:`raise_if_non_finite`: :func:`finite_probe` of the losses and of every gradient
    tensor is finite when all of them are, and non-finite when any value is NaN or inf (a
    finite overflow only sends it to the exact per-tensor check, which names the offender).

    Deferred on a GPU (``staging`` given), the probe's one value is copied to pinned host
    memory without blocking, behind an event, so reading it later waits at most for that
    event."""

    def __init__(
        self,
        probe: torch.Tensor,
        evaluation: Evaluation,
        grad_evals: int,
        sequential_steps: int,
        staging: _HostStaging | None,
    ) -> None:
        self.evaluation = evaluation
        self.grad_evals, self.sequential_steps = grad_evals, sequential_steps
        self.event: torch.cuda.Event | None = None
        self.staging = staging
        if staging is not None:
            probe, self.event = staging.stage(probe), staging.event
        self.probe = probe

    def raise_if_non_finite(self) -> None:
        if self.event is not None:
            self.event.synchronize()
        if math.isfinite(float(self.probe)):
            return
        where = (
            f"at gradient evaluation {self.grad_evals} (sequential step {self.sequential_steps})"
        )
        losses = self.evaluation.losses.detach()
        if not bool(torch.isfinite(losses).all()):
            bad = [float(v) for v in losses.tolist() if not math.isfinite(v)]
            raise DivergenceError(f"non-finite loss {bad[0]} {where}")
        for grads in self.evaluation.grads:
            for key, g in grads.items():
                if not bool(torch.isfinite(g).all()):
                    raise DivergenceError(f"non-finite gradient for parameter '{key}' {where}")


def finite_probe(tensors: list[torch.Tensor]) -> torch.Tensor:
    """A one-element tensor, computed without a host sync, that is non-finite whenever a
    value of ``tensors`` (any shapes) is NaN or +-inf: NaN and inf propagate through any sum
    (and inf - inf is NaN). It can also be non-finite when every value is finite but a sum
    overflows: a caller then checks exactly, per tensor.

    On the CPU (real floating-point tensors) it is the sum of the tensors' plain sums, one
    vectorized pass each, a one-element tensor (one point's loss) added as it is; an L1 norm
    there is an unfused abs-and-sum, about 15x slower at 1e5 values. Elsewhere it is
    :func:`l1_total`, one fused ``_foreach_norm`` launch for all. The tensors are the
    oracle's detached losses and gradients: no graph is recorded.
    """
    total: torch.Tensor | None = None
    for t in tensors:
        if not t.is_cpu or not t.is_floating_point():
            return l1_total(tensors)
        part = t if t.numel() == 1 else t.sum()
        total = part if total is None else total + part
    assert total is not None, "finite_probe needs at least one tensor"
    return total


@torch.no_grad()
def l1_total(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The sum of the L1 norms of ``tensors`` (any shapes), a 0-dim tensor on the device of
    the first, computed without a host sync.

    When all share one device and dtype (the usual case) this is one ``_foreach_norm`` launch
    and one sum, with no per-tensor host work; otherwise
    :func:`torch.nn.utils.get_total_norm` groups them by device and dtype.
    """
    first = tensors[0]
    if len(tensors) == 1:
        return torch.linalg.vector_norm(first, 1.0)
    device, dtype = first.device, first.dtype
    if all(t.device == device and t.dtype == dtype for t in tensors):
        return torch.stack(torch._foreach_norm(tensors, 1.0)).sum()
    return torch.nn.utils.get_total_norm(tensors, norm_type=1.0)
