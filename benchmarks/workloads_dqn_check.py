"""Why data_parallel fails on the DQN study: the target-network sync counts environment steps.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/workloads_dqn_check.py

CartPole-v1, 1,500 iterations, the study's DQN settings. Prints, per variant and seed, the
cumulative average training reward and the mean return of 3 greedy episodes. data_parallel with
N = 1 must equal Vanilla exactly (a sanity check of the objective's seeding).
"""

from __future__ import annotations

from typing import Any

import torch

import optkit
from optkit.oracle import Oracle

REG = optkit.get_registry()


def run(optimizer: dict[str, Any], seed: int, **objective: Any) -> tuple[float, float]:
    spec = {
        "name": "dqn",
        "env": "CartPole-v1",
        "learning_starts": 200,
        "target_update": 100,
        "eps_decay_steps": 1000,
        **objective,
    }
    obj = REG.create("objective", spec)
    obj.prepare(torch.device("cpu"), torch.float32)
    opt = REG.create("optimizer", optimizer)
    gen = torch.Generator().manual_seed(seed)
    params = obj.init_params(gen)
    state = opt.init(params)
    oracle = Oracle(obj, REG.create("executor", {"name": "vmap"}), gen)
    for _ in range(1500):
        params, state, _ = opt.step(params, state, oracle)
    return round(obj.evaluate(params)["reward"], 1), round(obj.greedy_return(params, 3), 1)


def dp(n: int, lr: float = 1e-3) -> dict[str, Any]:
    return {"name": "data_parallel", "base": "adam", "base_config": {"lr": lr}, "parallelism": n}


def main() -> None:
    torch.set_num_threads(1)
    variants: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("vanilla", {"name": "adam", "lr": 1e-3}, {}),
        ("data_parallel N=1", dp(1), {}),
        ("data_parallel N=4", dp(4), {}),
        ("data_parallel N=4, eps_decay_steps=4000", dp(4), {"eps_decay_steps": 4000}),
        ("data_parallel N=4, target_update=400", dp(4), {"target_update": 400}),
        ("data_parallel N=4, lr=4e-3", dp(4, 4e-3), {}),
    ]
    for label, optimizer, objective in variants:
        results = [run(optimizer, seed, **objective) for seed in range(3)]
        print(
            f"{label}: (cumulative average reward, greedy return) per seed: {results}", flush=True
        )


if __name__ == "__main__":
    main()
