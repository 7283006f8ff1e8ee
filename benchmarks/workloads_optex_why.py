"""Why OptEx does or does not save iterations on the real workloads: how well its kernel
gradient estimate matches the real stochastic gradient at the proxy points (CPU).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/workloads_optex_why.py

For each OptEx-N4 iteration (after the history holds 10 iterations) and each of its N - 1 proxy
steps, the estimate ``mu`` the proxy step used at point ``x_k`` is compared with the minibatch
gradient ``g_k`` the same iteration then evaluated at ``x_k``: cosine similarity and norm ratio.
As a yardstick, the cosine between two independent minibatch gradients at the same point (the
gradient noise; supervised workloads only, an RL batch would step the environment) and the
cosine between ``g_k`` and the previous iteration's gradient (what a momentum method reuses).
Writes the "why" section of ``docs/benchmarks/optex-workloads.md``.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from typing import Any

import torch
from workloads_data import DOC, cpu_name, replace_section

import optkit
from optkit.interfaces import Batch, Evaluation, Params
from optkit.oracle import Oracle

WORKLOADS: dict[str, dict[str, Any]] = {
    "shakespeare (small)": {
        "objective": {
            "name": "shakespeare",
            "context": 32,
            "width": 32,
            "layers": 1,
            "heads": 2,
            "batch_size": 16,
        },
        "lr": 3e-3,
        "noise": True,
    },
    "cifar10 (cnn)": {
        "objective": {"name": "cifar10", "model": "cnn", "batch_size": 32},
        "lr": 1e-3,
        "noise": True,
    },
    "dqn CartPole-v1": {
        "objective": {"name": "dqn", "env": "CartPole-v1", "learning_starts": 200},
        "lr": 1e-3,
        "noise": False,
    },
}


def flat(d: Params) -> torch.Tensor:
    return torch.cat([v.reshape(-1) for v in d.values()])


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


class RecordingOracle(Oracle):
    """An Oracle that keeps the last round's points and evaluation."""

    def evaluate(
        self,
        points: Sequence[Params],
        *,
        batches: Sequence[Batch] | None = None,
        sequential: bool = True,
    ) -> Evaluation:
        ev = super().evaluate(points, batches=batches, sequential=sequential)
        self.last = ([flat(p) for p in points], [flat(g) for g in ev.grads])
        return ev


def measure(key: str, iters: int, seed: int) -> dict[str, float]:
    reg = optkit.get_registry()
    spec = WORKLOADS[key]
    obj = reg.create("objective", spec["objective"])
    obj.prepare(torch.device("cpu"), torch.float32)
    opt = reg.create(
        "optimizer",
        {"name": "optex", "base": "adam", "base_config": {"lr": spec["lr"]}, "parallelism": 4},
    )
    gen = torch.Generator().manual_seed(seed)
    params = obj.init_params(gen)
    state = opt.init(params)
    oracle = RecordingOracle(obj, reg.create("executor", {"name": "vmap"}), gen)
    queries: list[tuple[torch.Tensor, torch.Tensor]] = []
    est = state.estimator
    real_query = est.query

    def recording_query(x: torch.Tensor) -> torch.Tensor:
        mu = real_query(x)
        queries.append((x.clone(), mu.clone()))
        return mu

    est.query = recording_query
    noise_gen = torch.Generator().manual_seed(10_000 + seed)
    grad_fn = torch.func.grad(obj.loss)
    out: dict[str, list[float]] = {"cos_est": [], "norm_ratio": [], "cos_noise": [], "cos_prev": []}
    prev: torch.Tensor | None = None
    for it in range(iters):
        queries.clear()
        params, state, _ = opt.step(params, state, oracle)
        points, grads = oracle.last
        if it >= 10 and queries:
            for k, (x, mu) in enumerate(queries):
                assert torch.equal(x, points[k])
                out["cos_est"].append(cos(mu, grads[k]))
                out["norm_ratio"].append(float(mu.norm() / grads[k].norm()))
            if spec["noise"]:
                p0 = {n: v for n, v in zip(params, _split(points[0], params), strict=True)}
                other = flat(grad_fn(p0, obj.sample_batch(noise_gen, p0)))
                out["cos_noise"].append(cos(grads[0], other))
            if prev is not None:
                out["cos_prev"].append(cos(grads[0], prev))
        prev = grads[-1]
    return {k: statistics.median(v) for k, v in out.items() if v}


def _split(vec: torch.Tensor, like: Params) -> list[torch.Tensor]:
    parts, start = [], 0
    for v in like.values():
        parts.append(vec[start : start + v.numel()].reshape(v.shape))
        start += v.numel()
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    lines = [
        "## Why: OptEx's gradient estimate against the real minibatch gradient",
        "",
        f"CPU ({cpu_name()}), OptEx-N4 on Adam, one seed ({args.seed}), iterations 11-"
        f"{args.iters}; medians over all proxy steps. Command:",
        "",
        "    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/workloads_optex_why.py",
        "",
        "| workload | cos(estimate, real gradient) | norm(estimate) / norm(real) |"
        " cos(two minibatch gradients, same point) | cos(gradient, previous iteration's) |",
        "|---|---|---|---|---|",
    ]
    for key in WORKLOADS:
        r = measure(key, args.iters, args.seed)
        print(key, r, flush=True)
        noise = f"{r['cos_noise']:.3f}" if "cos_noise" in r else "n/a (RL)"
        lines.append(
            f"| {key} | {r['cos_est']:.3f} | {r['norm_ratio']:.3f} | {noise} |"
            f" {r['cos_prev']:.3f} |"
        )
    replace_section(DOC, "why", "\n".join(lines))
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
