"""An :class:`~optkit.oracle.Oracle` that times itself, for benchmarks on public APIs."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from optkit.interfaces import Batch, Evaluation, Params
from optkit.oracle import Oracle


class TimedOracle(Oracle):
    """An oracle adding up the wall-clock seconds of :meth:`evaluate` (its finite check's
    synchronisation included) in :attr:`spent`, and the calls in :attr:`rounds`.

    With :attr:`drain`, the device's queue (work queued before the round) is drained before the
    clock starts, so only the round's own work and waits are counted. Reset both counters by
    assigning 0.
    """

    spent: float = 0.0
    rounds: int = 0
    drain: bool = False

    def evaluate(
        self,
        points: Sequence[Params],
        *,
        batches: Sequence[Batch] | None = None,
        sequential: bool = True,
    ) -> Evaluation:
        device = self.objective.device
        if self.drain and device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        try:
            return super().evaluate(points, batches=batches, sequential=sequential)
        finally:
            self.spent += time.perf_counter() - t
            self.rounds += 1
