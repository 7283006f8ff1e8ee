"""Per-round cost of the ``ray`` executor against ``serial`` and ``vmap``, and what a 10M+
parameter model moves through Ray's object store per OptEx iteration.

One OptEx iteration with parallelism N is one parallel round: N points out to the workers, N
gradients back. This script times such rounds through the real :class:`optkit.oracle.Oracle`
(fresh points every round, as OptEx sends them; batches drawn in the driver) for

1. ``rosenbrock`` at d = 1e3 .. 1e7 (the gradient is nearly free, so what remains is the
   executor's overhead), N = 4, executors serial / vmap / ray with 2 actors x 1 CPU and
   ray with 4 actors x 0.5 CPU;
2. the ``shakespeare`` character transformer scaled to 10.7M parameters (real text), N = 2,
   serial / ray with 2 actors x 1 CPU: bytes moved and transfer time against gradient time;
3. ``sphere`` at d = 1e5 .. 3e7, N = 2 on 2 actors: the copy cost alone (its gradient is
   nearly free), as an effective bandwidth.

Usage::

    .venv/bin/python benchmarks/ray_scaling.py [--quick] [--out docs/benchmarks/scaling.json]

Prints markdown tables and writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

import optkit
from optkit.interfaces import Executor, Objective
from optkit.oracle import Oracle


def make_objective(spec: dict[str, Any]) -> Objective:
    obj = optkit.get_registry().create("objective", spec)
    obj.optkit_spec = dict(spec)  # actors rebuild the objective from its spec
    obj.prepare(torch.device("cpu"), torch.float32)
    return obj


def time_rounds(
    obj: Objective, executor: Executor, n: int, rounds: int, warmup: int = 1
) -> dict[str, Any]:
    """Seconds per Oracle round of ``n`` fresh points (median over ``rounds``)."""
    gen = torch.Generator().manual_seed(0)
    base = obj.init_params(gen)
    oracle = Oracle(obj, executor, gen)
    stats = getattr(executor, "stats", None)
    times = []
    before: dict[str, float] = {}
    for r in range(warmup + rounds):
        points = [{k: v + 1e-3 * (r * n + j) for k, v in base.items()} for j in range(n)]
        if r == warmup and stats is not None:
            before = stats.as_dict()
        start = time.perf_counter()
        oracle.evaluate(points)
        if r >= warmup:
            times.append(time.perf_counter() - start)
    out: dict[str, Any] = {"round_s": statistics.median(times), "rounds": rounds}
    if stats is not None:
        after = stats.as_dict()
        for key in ("bytes_out", "bytes_in", "send_s", "wait_s", "receive_s", "compute_s"):
            out[key] = (after[key] - before[key]) / rounds
    return out


def ray_executor(num_actors: int, cpus: float) -> Executor:
    return optkit.get_registry().create(
        "executor", {"name": "ray", "num_actors": num_actors, "num_cpus_per_actor": cpus}
    )


def overhead_sweep(dims: list[int], n: int, rounds: int) -> list[dict[str, Any]]:
    reg = optkit.get_registry()
    makers = {
        "serial": lambda: reg.create("executor", {"name": "serial"}),
        "vmap": lambda: reg.create("executor", {"name": "vmap"}),
        "ray 2x1cpu": lambda: ray_executor(2, 1.0),
        "ray 4x0.5cpu": lambda: ray_executor(4, 0.5),
    }
    rows = []
    for label, make in makers.items():  # one executor at a time: the actors hold the CPUs
        ex = make()
        for d in dims:  # the ray actors load each objective without restarting
            obj = make_objective({"name": "rosenbrock", "dim": d})
            res = time_rounds(obj, ex, n, rounds if d < 10**7 else max(2, rounds // 2))
            rows.append({"dim": d, "executor": label, **res})
            print(f"d={d:>9} {label:>13}: {1e3 * res['round_s']:9.2f} ms/round", flush=True)
        ex.close()
    order = list(makers)
    rows.sort(key=lambda r: (r["dim"], order.index(r["executor"])))
    return rows


def model_10m(n: int, rounds: int) -> list[dict[str, Any]]:
    spec = {
        "name": "shakespeare",
        "context": 64,
        "width": 384,
        "layers": 6,
        "heads": 6,
        "batch_size": 8,
    }
    obj = make_objective(spec)
    d = sum(v.numel() for v in obj.init_params(torch.Generator().manual_seed(0)).values())
    rows = []
    for label, ex in (
        ("serial", optkit.get_registry().create("executor", {"name": "serial"})),
        ("ray 2x1cpu", ray_executor(2, 1.0)),
    ):
        res = time_rounds(obj, ex, n, rounds)
        rows.append({"params": d, "n": n, "executor": label, **res})
        print(f"shakespeare d={d} {label}: {res}", flush=True)
        ex.close()
    return rows


def transfer(dims: list[int], rounds: int) -> list[dict[str, Any]]:
    """Effective copy bandwidth: ``sphere`` (gradient 2x, nearly free), N = 2 on 2 actors."""
    ex = ray_executor(2, 1.0)
    rows = []
    for d in dims:
        res = time_rounds(make_objective({"name": "sphere", "dim": d}), ex, 2, rounds)
        moved = res["bytes_out"] + res["bytes_in"]
        res["overhead_s"] = res["round_s"] - res["compute_s"]
        res["GBps"] = moved / res["overhead_s"] / 1e9
        rows.append({"dim": d, **res})
        print(f"sphere d={d:.0e}: {res}", flush=True)
    ex.close()
    return rows


def markdown(
    sweep: list[dict[str, Any]], model: list[dict[str, Any]], n: int, copies: list[dict[str, Any]]
) -> str:
    lines = [
        f"### Overhead sweep: rosenbrock, N = {n} points per round",
        "",
        "| d | executor | ms / round | x serial | MB out / round | MB in / round |"
        " send ms | wait ms | of which compute ms | receive ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    serial = {r["dim"]: r["round_s"] for r in sweep if r["executor"] == "serial"}
    for r in sweep:
        extra = "| - | - | - | - | - | - |"
        if "bytes_out" in r:
            extra = (
                f"| {r['bytes_out'] / 1e6:.2f} | {r['bytes_in'] / 1e6:.2f} |"
                f" {1e3 * r['send_s']:.1f} | {1e3 * r['wait_s']:.1f} |"
                f" {1e3 * r['compute_s']:.1f} | {1e3 * r['receive_s']:.1f} |"
            )
        lines.append(
            f"| {r['dim']:.0e} | {r['executor']} | {1e3 * r['round_s']:.2f} |"
            f" {r['round_s'] / serial[r['dim']]:.2f} {extra}"
        )
    lines += [
        "",
        "### 10.7M-parameter character transformer (shakespeare), one round",
        "",
        "| executor | N | s / round | MB out | MB in | send s | wait s |"
        " compute s (busiest actor) | receive s | transfer + scheduling s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in model:
        if "bytes_out" in r:
            moved = r["round_s"] - r["compute_s"]
            lines.append(
                f"| {r['executor']} | {r['n']} | {r['round_s']:.3f} |"
                f" {r['bytes_out'] / 1e6:.1f} | {r['bytes_in'] / 1e6:.1f} |"
                f" {r['send_s']:.3f} | {r['wait_s']:.3f} | {r['compute_s']:.3f} |"
                f" {r['receive_s']:.3f} | {moved:.3f} |"
            )
        else:
            lines.append(
                f"| {r['executor']} | {r['n']} | {r['round_s']:.3f} | - | - | - | - | - | - | - |"
            )
    lines += [
        "",
        "### Copy cost: sphere (gradient nearly free), N = 2 points on 2 actors",
        "",
        "| d | ms / round | compute ms | MB moved (out + in) | round - compute ms |"
        " effective GB/s |",
        "|---|---|---|---|---|---|",
    ]
    for r in copies:
        lines.append(
            f"| {r['dim']:.0e} | {1e3 * r['round_s']:.1f} | {1e3 * r['compute_s']:.1f} |"
            f" {(r['bytes_out'] + r['bytes_in']) / 1e6:.0f} |"
            f" {1e3 * r['overhead_s']:.1f} | {r['GBps']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    parser.add_argument("--out", default="docs/benchmarks/scaling.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    dims = [1000, 10**5] if args.quick else [1000, 10**5, 10**6, 10**7]
    n = 4
    started = time.time()
    sweep = overhead_sweep(dims, n, rounds=3 if args.quick else 6)
    model = [] if args.quick else model_10m(n=2, rounds=3)
    copies = transfer(
        [10**5, 10**6] if args.quick else [10**5, 10**6, 10**7, 3 * 10**7],
        rounds=3 if args.quick else 5,
    )
    table = markdown(sweep, model, n, copies)
    print(table)
    meta = {
        "command": "python benchmarks/ray_scaling.py" + (" --quick" if args.quick else ""),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs,"
        " no GPU, torch threads 1",
        "load_average_at_end": os.getloadavg(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "seconds": time.time() - started,
    }
    Path(args.out).write_text(
        json.dumps(
            {"meta": meta, "sweep": sweep, "model": model, "copies": copies, "table": table},
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
