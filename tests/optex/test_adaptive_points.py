"""``adaptive_points``: the next round's trajectory ends one point past the point the last
round chose (at least two, at most P), with the round's workers shared out evenly."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from optkit_optex.config import OptExConfig
from optkit_optex.rounds import even_counts

from optkit.errors import ConfigError

from .test_engine import by_hand, objective


def run(
    config: OptExConfig, iters: int, noise: float, lr: float = 0.05
) -> list[tuple[list[int], int]]:
    """(workers per point, chosen point) of each round on a noisy Rosenbrock (d = 20)."""
    _, rounds, _ = by_hand(config, objective(d=20, noise=noise), iters, seed=4, lr=lr)
    return [(list(planned.counts), chosen) for planned, _, chosen in rounds]


@pytest.mark.parametrize("noise", [0.0, 30.0])
def test_each_round_ends_one_point_past_the_last_rounds_choice(noise: float) -> None:
    config = OptExConfig(workers=8, parallelism=8, adaptive_points=True)
    rounds = run(config, 25, noise, lr=1.0)  # a rate at which late proxy points overshoot
    assert rounds[0][0] == [1] * 8  # the first round: no estimate yet, a plain round
    for (_, chosen), (counts, _) in itertools.pairwise(rounds[1:]):
        points = min(8, max(2, chosen + 2))
        assert counts == even_counts(points, 8) and sum(counts) == 8
    lengths = {len(counts) for counts, _ in rounds[1:]}
    assert len(lengths) > 1  # the length moved with the choices


def test_with_batches_per_point_the_workers_are_shared_out_evenly() -> None:
    rounds = run(OptExConfig(parallelism=4, batches_per_point=2, adaptive_points=True), 12, 5.0)
    for counts, _ in rounds[1:]:
        assert sum(counts) == 8 and 2 <= len(counts) <= 4
        assert counts == even_counts(len(counts), 8)
    assert even_counts(3, 8) == [2, 2, 4]


def test_without_it_every_round_has_all_points() -> None:
    rounds = run(OptExConfig(workers=8, parallelism=8), 10, 30.0)
    assert all(counts == [1] * 8 for counts, _ in rounds)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"adaptive_points": True, "next_iterate": "last"}, "needs next_iterate = 'best'"),
        (
            {"adaptive_points": True, "workers": 8, "batches_per_point": "auto"},
            "adaptive_points and batches_per_point = 'auto' both choose the split",
        ),
        ({"adaptive_points": "yes"}, "adaptive_points must be true or false, got 'yes'"),
    ],
)
def test_bad_combinations_are_refused_naming_the_keys(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        OptExConfig.create(**options)
