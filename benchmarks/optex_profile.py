"""Where one OptEx iteration's time goes: ms per iteration of vanilla / OptEx / data_parallel
and a cProfile of OptEx's step (CPU, one thread).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/optex_profile.py [--dim 100000] [--n 8]

``--ops`` instead counts torch operators per iteration with ``torch.profiler`` (fused and
generic OptEx paths, vanilla): all ``aten::`` ops, and ``aten::_local_scalar_dense``, the op
behind every ``.item()`` / ``float(t)`` / ``bool(t)`` (a host sync on a GPU).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from typing import Any

import torch

import optkit
from optkit.oracle import Oracle


def timed(spec: dict[str, Any], dim: int, iterations: int) -> tuple[float, Any, Any, Any, Oracle]:
    registry = optkit.get_registry()
    objective = registry.create(
        "objective", {"name": "rosenbrock", "dim": dim, "init_low": -2.0, "init_high": 2.0}
    )
    objective.prepare(torch.device("cpu"), torch.float32)
    optimizer = registry.create("optimizer", spec)
    generator = torch.Generator().manual_seed(0)
    params = objective.init_params(generator)
    state = optimizer.init(params)
    oracle = Oracle(objective, registry.create("executor", {"name": "vmap"}), generator)
    for _ in range(3):  # warm-up: fills the history
        params, state, _ = optimizer.step(params, state, oracle)
    start = time.perf_counter()
    for _ in range(iterations):
        params, state, _ = optimizer.step(params, state, oracle)
    return (time.perf_counter() - start) / iterations * 1e3, optimizer, params, state, oracle


def op_counts(spec: dict[str, Any], dim: int, iterations: int = 5) -> dict[str, float]:
    """Mean aten ops and ``_local_scalar_dense`` calls per iteration (after warm-up)."""
    from torch.profiler import ProfilerActivity, profile

    _, optimizer, params, state, oracle = timed(spec, dim, 1)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(iterations):
            params, state, _ = optimizer.step(params, state, oracle)
    names = [e.name for e in prof.events() if e.name.startswith("aten::")]
    # top-level ops only would need the tree; all aten ops (nested included) are comparable
    return {
        "aten_ops": len(names) / iterations,
        "local_scalar_dense": names.count("aten::_local_scalar_dense") / iterations,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=100_000)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--ops", action="store_true", help="operator counts, not timings")
    args = parser.parse_args()
    torch.set_num_threads(1)
    wrap = {"base": "adam", "base_config": {"lr": 0.01}, "parallelism": args.n}
    if args.ops:
        for label, spec in {
            "vanilla": {"name": "adam", "lr": 0.01},
            "optex (fused)": {"name": "optex", **wrap},
            "optex (generic loop)": {"name": "optex", **wrap, "fused": False},
            "target": {"name": "target", **wrap},
        }.items():
            counts = op_counts(spec, args.dim)
            print(f"{label}: " + ", ".join(f"{k} {v:.0f}" for k, v in counts.items()))
        return
    specs = {
        "vanilla": {"name": "adam", "lr": 0.01},
        "optex": {"name": "optex", **wrap},
        "optex refit_every=10": {"name": "optex", **wrap, "refit_every": 10},
        "data_parallel": {"name": "data_parallel", **wrap},
    }
    for label, spec in specs.items():
        print(f"{label}: {timed(spec, args.dim, args.iterations)[0]:.2f} ms/iteration")
    _, optimizer, params, state, oracle = timed(specs["optex"], args.dim, 1)
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(20):
        params, state, _ = optimizer.step(params, state, oracle)
    profile.disable()
    pstats.Stats(profile).sort_stats("cumulative").print_stats(18)


if __name__ == "__main__":
    main()
