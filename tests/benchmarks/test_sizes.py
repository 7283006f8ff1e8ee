"""The benchmark sizes: smoke by default, full on request, a clear error otherwise."""

from __future__ import annotations

import pytest

from .conftest import current_size


def test_smoke_is_the_default_and_full_is_larger(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPTKIT_BENCH_SIZE", raising=False)
    smoke = current_size()
    monkeypatch.setenv("OPTKIT_BENCH_SIZE", "full")
    full = current_size()
    assert (smoke.name, smoke.rounds, smoke.warmup) == ("smoke", 1, 0)
    assert full.dim > smoke.dim and full.rounds > smoke.rounds


def test_an_unknown_size_names_the_valid_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTKIT_BENCH_SIZE", "huge")
    with pytest.raises(pytest.UsageError, match=r"OPTKIT_BENCH_SIZE='huge'.*smoke, full"):
        current_size()
