"""Micro-benchmarks on optkit's public APIs, in two sizes.

* **smoke** (the default, what CI runs as part of ``pytest``): tiny sizes, each benchmarked
  function called once (``benchmark.pedantic`` with one round), plus assertions on what it
  returned. Seconds in total; it keeps every benchmark importable and runnable.
* **full** (``OPTKIT_BENCH_SIZE=full``): the sizes of ``docs/benchmarks/README.md``, several
  timed rounds after warm-up rounds; run with ``--benchmark-json`` to write the numbers::

      OPTKIT_BENCH_SIZE=full OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/benchmarks \\
          -k "not study and not script" --benchmark-json docs/benchmarks/micro-cpu.json

(the study and script smoke runs in this folder time nothing; ``-k`` leaves them out).

Every benchmark builds its components through the registry (``optkit.get_registry()``) or a
plugin's public class, and touches no private attribute.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch

import optkit
from optkit.interfaces import Objective

SIZES = ("smoke", "full")


@dataclass(frozen=True)
class Size:
    """The problem sizes and repetition counts of one mode.

    Attributes:
        name: ``"smoke"`` or ``"full"``.
        dim: d, parameters of the synthetic objectives (Rosenbrock) and of the estimator.
        history: T0, the estimator's history length.
        parallelism: N, gradient evaluations per parallel round.
        rounds: timed rounds per benchmark (each round one call).
        warmup: untimed calls before the timed rounds.
    """

    name: str
    dim: int
    history: int
    parallelism: int
    rounds: int
    warmup: int


def current_size() -> Size:
    """The mode named by ``OPTKIT_BENCH_SIZE`` (default ``smoke``)."""
    name = os.environ.get("OPTKIT_BENCH_SIZE", "smoke")
    if name == "smoke":
        return Size("smoke", dim=64, history=8, parallelism=4, rounds=1, warmup=0)
    if name == "full":
        return Size("full", dim=100_000, history=50, parallelism=5, rounds=30, warmup=5)
    raise pytest.UsageError(
        f"OPTKIT_BENCH_SIZE={name!r} is not a benchmark size; use one of {', '.join(SIZES)}"
    )


@pytest.fixture(scope="session")
def size() -> Size:
    return current_size()


@pytest.fixture
def measure(benchmark: Any, size: Size) -> Callable[[Callable[[], Any]], Any]:
    """``measure(fn)``: time ``fn`` with pytest-benchmark at this mode's rounds and warm-up
    (one call in smoke mode) and return its last result; records the size in the JSON."""

    def run(fn: Callable[[], Any]) -> Any:
        benchmark.extra_info.update(
            size=size.name,
            dim=size.dim,
            parallelism=size.parallelism,
            torch=torch.__version__,
            threads=torch.get_num_threads(),
        )
        return benchmark.pedantic(fn, rounds=size.rounds, iterations=1, warmup_rounds=size.warmup)

    return run


@pytest.fixture
def make_objective() -> Callable[[dict[str, Any]], Objective]:
    """``make_objective(spec)``: a registered objective, prepared on the CPU in float32."""

    def make(spec: dict[str, Any]) -> Objective:
        objective = optkit.get_registry().create("objective", spec)
        objective.prepare(torch.device("cpu"), torch.float32)
        return objective

    return make
