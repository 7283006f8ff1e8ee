"""``shared_batches``: every point of an OptEx round on the same minibatch draw(s), so the
observed losses that ``next_iterate = "best"`` compares differ only by position."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import torch

from optkit.errors import ConfigError
from optkit.interfaces import Batch, Evaluation, Params
from optkit.oracle import Oracle
from optkit.registry import get_registry

REG = get_registry()


class RecordingOracle(Oracle):
    """The oracle, keeping the batches of every round it evaluates."""

    rounds: list[list[Batch]]

    def evaluate(
        self,
        points: Sequence[Params],
        *,
        batches: Sequence[Batch] | None = None,
        sequential: bool = True,
    ) -> Evaluation:
        if batches is None:
            batches = self.sample_batches(points, sequential)
        self.rounds.append(list(batches))
        return super().evaluate(points, batches=batches, sequential=sequential)


def run(options: dict[str, Any], steps: int = 4) -> tuple[list[list[Batch]], list[float]]:
    objective = REG.create("objective", {"name": "sphere", "dim": 6, "noise": 0.5})
    objective.prepare(torch.device("cpu"), torch.float64)
    gen = torch.Generator().manual_seed(0)
    params = objective.init_params(gen)
    optimizer = REG.create("optimizer", {"name": "optex", "base": "adam", **options})
    state = optimizer.init(params)
    oracle = RecordingOracle(objective, REG.create("executor", {"name": "vmap"}), gen)
    oracle.rounds = []
    losses = []
    for _ in range(steps):
        params, state, info = optimizer.step(params, state, oracle)
        losses.append(info.loss)
    return oracle.rounds, losses


def same(a: Batch, b: Batch) -> bool:
    return bool(torch.equal(a, b))


def test_every_point_of_a_round_reads_the_same_draws() -> None:
    rounds, losses = run({"parallelism": 3, "batches_per_point": 2, "shared_batches": True})
    assert len(rounds) == 4 and all(len(r) == 6 for r in rounds)
    for batches in rounds:  # points' workers consecutive: (p0 k0, p0 k1, p1 k0, ...)
        assert all(same(batches[i], batches[i % 2]) for i in range(6))
        assert not same(batches[0], batches[1])  # K draws, not one
    assert not same(rounds[1][0], rounds[2][0])  # a new draw every round
    assert all(torch.isfinite(torch.tensor(losses)))


def test_without_it_every_evaluation_draws_its_own() -> None:
    rounds, _ = run({"parallelism": 3, "batches_per_point": 2})
    for batches in rounds:
        assert not any(same(batches[i], batches[j]) for i in range(6) for j in range(i))


def test_a_non_bool_is_refused_naming_the_key() -> None:
    with pytest.raises(
        ConfigError, match="key 'shared_batches' of optimizer 'optex' must be bool, got 'yes'"
    ):
        REG.create("optimizer", {"name": "optex", "shared_batches": "yes"})
