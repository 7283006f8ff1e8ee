"""Helpers shared by the workload tests: run a few optimizer steps, compare vmap to serial."""

from __future__ import annotations

from typing import Any

import torch

from optkit.oracle import Oracle
from optkit.registry import Registry


def run_steps(
    registry: Registry,
    objective_spec: dict,
    steps: int,
    *,
    optimizer: dict | None = None,
    executor: str = "serial",
    seed: int = 0,
) -> tuple[Any, dict[str, torch.Tensor], list[float], dict[str, float], dict[str, float]]:
    """Build an objective, run ``steps`` optimizer iterations on CPU; returns
    ``(objective, params, step losses, metrics before, metrics after)``."""
    obj = registry.create("objective", objective_spec)
    obj.prepare(torch.device("cpu"), torch.float32)
    opt = registry.create("optimizer", optimizer or {"name": "adam", "lr": 1e-3})
    gen = torch.Generator().manual_seed(seed)
    params = obj.init_params(gen)
    before = obj.evaluate(params)
    state = opt.init(params)
    oracle = Oracle(obj, registry.create("executor", {"name": executor}), gen)
    losses = []
    for _ in range(steps):
        params, state, info = opt.step(params, state, oracle)
        losses.append(info.loss)
    return obj, params, losses, before, obj.evaluate(params)


def vmap_matches_serial(registry: Registry, obj: Any, n: int = 3, seed: int = 1) -> None:
    """N points evaluated by the vmap executor equal the serial executor's results."""
    gen = torch.Generator().manual_seed(seed)
    points = [obj.init_params(gen) for _ in range(n)]
    batches = [obj.sample_batch(gen, p) for p in points]
    a = registry.create("executor", {"name": "vmap"}).evaluate(obj, points, batches)
    b = registry.create("executor", {"name": "serial"}).evaluate(obj, points, batches)
    torch.testing.assert_close(a.losses, b.losses, rtol=1e-5, atol=1e-6)
    for ga, gb in zip(a.grads, b.grads, strict=True):
        for key in ga:
            torch.testing.assert_close(ga[key], gb[key], rtol=1e-4, atol=1e-5)
