"""OptEx and the framework's own cost on one GPU, side by side in one run; writes one JSON.

On the GPU machine, from the checkout (one command; see ``docs/benchmarks/README.md`` for
carrying the MNIST cache)::

    python3 -m pip install --no-deps --no-build-isolation -e . -q && \\
        python3 benchmarks/optex_gpu.py --out $OUT/optex-gpu.json

Objectives (all registered): Rosenbrock at d = 1e5 and 1e6 (exact gradients, Adam lr 0.01)
and ``mnist`` with the MLP (minibatch 128, Adam lr 1e-3; its data must be cached); with
``--networks`` also issue 19's Fashion-MNIST CNN and Shakespeare transformer at batch 256
(``--only a,b`` keeps the named objectives). Variants,
N = 8, ``vmap`` executor: ``vanilla`` (the framework's ``adam``), ``raw_adam`` (a plain eager
``torch.optim.Adam`` loop outside the framework), ``optex`` (defaults) and option variants of
it, ``data_parallel`` and ``target``; ``*_graph``: ``vanilla``, ``optex`` and ``data_parallel``
with the executor's rounds replayed from CUDA graphs (``cuda_graph``). A variant whose config
the installed optimizer rejects is recorded with its error, not run.

Per objective: milliseconds per iteration (interleaved variants; steady state and each
iteration synchronized), the oracle's time per round (``oracle_ms``: wall-clock inside
``Oracle.evaluate``, its wait for the previous round's finite check included: on a GPU the
check is read one round late, as the runner does), synchronisations per OptEx iteration
(CUDA), and wall-clock to vanilla's 40-iteration loss. The issue-18 goal (a registered
first-order iteration within 1.1x of the plain loop, the oracle's time per round under 1 ms)
is in ``goal``. Per d: the estimator's query (eager and as a CUDA graph) against reading its
history once at the measured copy bandwidth, begin, append and memory.

``--small``: the same code at CPU size in seconds (the CI smoke test,
``tests/benchmarks/test_gpu_script.py``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from optkit_optex.config import EstimatorConfig
from optkit_optex.estimator import KernelGradientEstimator

import optkit
from optkit.errors import ConfigError
from optkit.interfaces import Objective, Params
from optkit.testing import GPU_STUDY_NETWORKS, TimedOracle, count_syncs

N = 8
T0 = 50


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, reps: int, warm: int = 3) -> float:
    """Median seconds of ``fn`` over ``reps`` synchronized calls after ``warm`` calls."""
    out = []
    for i in range(warm + reps):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        if i >= warm:
            out.append(time.perf_counter() - t)
    return statistics.median(out)


# the models of tasks/study-optex-networks-{fashion,shakespeare}-gpu.toml at batch 256
NETWORKS = GPU_STUDY_NETWORKS


GRAPHED = {"name": "vmap", "cuda_graph": True}


def specs(lr: float) -> dict[str, dict[str, Any]]:
    """The variants by label; ``raw`` marks the plain loop."""
    base = {"name": "optex", "base": "adam", "base_config": {"lr": lr}, "parallelism": N}
    wrap = {k: v for k, v in base.items() if k != "name"}
    return {
        "vanilla": {"name": "adam", "lr": lr},
        "raw_adam": {"raw": True, "lr": lr},
        "optex": base,
        "optex_last": {**base, "next_iterate": "last"},
        "optex_host_solve": {**base, "device_solve": False},
        "optex_eager": {**base, "cuda_graph": False},
        "optex_generic": {**base, "fused": False},
        "optex_lag0": {**base, "fit_lag": 0},
        "optex_refit10": {**base, "refit_every": 10},
        "data_parallel": {"name": "data_parallel", **wrap},
        "target": {"name": "target", **wrap},
        # the same rounds replayed from CUDA graphs (the vmap executor's cuda_graph)
        "vanilla_graph": {"name": "adam", "lr": lr, "executor": GRAPHED},
        "optex_graph": {**base, "executor": GRAPHED},
        "data_parallel_graph": {"name": "data_parallel", **wrap, "executor": GRAPHED},
    }


class Runner:
    """One variant on one objective: ``step()`` advances one iteration; ``params()``."""

    def __init__(self, obj: Objective, spec: dict[str, Any], seed: int = 0) -> None:
        self.obj = obj
        self.gen = torch.Generator().manual_seed(seed)
        start = obj.init_params(self.gen)
        self.raw = bool(spec.get("raw"))
        if self.raw:  # a plain training loop: leaf tensors, backward, torch.optim.Adam
            self.leaves = {k: v.clone().requires_grad_(True) for k, v in start.items()}
            self.torch_opt = torch.optim.Adam(list(self.leaves.values()), lr=spec["lr"])
            return
        registry = optkit.get_registry()
        self.opt = registry.create("optimizer", {k: v for k, v in spec.items() if k != "executor"})
        self.p, self.s = start, self.opt.init(start)
        # as run_loop builds it: on a GPU each round's finite check is read one round late
        executor = registry.create("executor", spec.get("executor", {"name": "vmap"}))
        defer = obj.device.type == "cuda"
        self.oracle = TimedOracle(obj, executor, self.gen, defer_check=defer)

    def step(self) -> None:
        if self.raw:
            batch = self.obj.sample_batch(self.gen, self.leaves)
            self.torch_opt.zero_grad(set_to_none=True)
            self.obj.loss(self.leaves, batch).backward()
            self.torch_opt.step()
            return
        self.p, self.s, _ = self.opt.step(self.p, self.s, self.oracle)

    def params(self) -> Params:
        return {k: v.detach() for k, v in self.leaves.items()} if self.raw else self.p


def runners(obj: Objective, lr: float, errors: dict[str, str]) -> dict[str, Runner]:
    """Every variant the installed optimizers accept; the others' errors go to ``errors``."""
    out = {}
    for label, spec in specs(lr).items():
        try:
            out[label] = Runner(obj, spec)
        except ConfigError as err:
            errors[label] = str(err)
    return out


def iteration_cost(
    obj: Objective, lr: float, device: torch.device, warm: int, rounds: int, block: int
) -> dict[str, Any]:
    """Milliseconds per iteration, the variants interleaved (``rounds`` rounds over them after
    ``warm`` iterations of each), so that drifts of the machine hit every variant alike:
    ``label`` is the median over rounds of a block of ``block`` iterations with one
    synchronisation at its end (a training loop); ``label_synced`` the median of single
    synchronized iterations; ``label_oracle_ms`` the oracle's time per round over both."""
    errors: dict[str, str] = {}
    runs = runners(obj, lr, errors)
    for run in runs.values():
        for _ in range(warm):
            run.step()
        if not run.raw:
            run.oracle.spent = 0.0
    steady: dict[str, list[float]] = {label: [] for label in runs}
    single: dict[str, list[float]] = {label: [] for label in runs}
    for _ in range(rounds):
        for label, run in runs.items():
            sync(device)
            t = time.perf_counter()
            for _ in range(block):
                run.step()
            sync(device)
            steady[label].append((time.perf_counter() - t) / block)
            for _ in range(block):
                sync(device)
                t = time.perf_counter()
                run.step()
                sync(device)
                single[label].append(time.perf_counter() - t)
    out: dict[str, Any] = {label: 1e3 * statistics.median(v) for label, v in steady.items()}
    out.update({f"{label}_synced": 1e3 * statistics.median(v) for label, v in single.items()})
    for label, run in runs.items():
        if not run.raw:
            out[f"{label}_oracle_ms"] = 1e3 * run.oracle.spent / (2 * rounds * block)
        if label.startswith("optex") and device.type == "cuda":
            out[f"{label}_syncs_per_iteration"] = count_syncs(run.step)
    out["errors"] = errors
    return out


def to_target(obj: Objective, lr: float, device: torch.device, iterations: int) -> dict[str, Any]:
    """Wall-clock (optimizer steps only, synchronized) and iterations to reach vanilla's
    loss after ``iterations`` iterations."""
    goal = None
    out: dict[str, Any] = {}
    for label, run in runners(obj, lr, {}).items():
        wall, iters = 0.0, 0
        while iters < iterations:
            sync(device)
            t0 = time.perf_counter()
            run.step()
            sync(device)
            wall += time.perf_counter() - t0
            iters += 1
            if goal is not None and obj.evaluate(run.params())["loss"] <= goal:
                break
        loss = obj.evaluate(run.params())["loss"]
        goal = loss if goal is None else goal
        out[label] = {"iterations": iters, "wall_ms": 1e3 * wall, "loss": loss}
        out[label]["reached"] = bool(loss <= goal)
    return out


def estimator_bench(d: int, device: torch.device, bandwidth: float, reps: int) -> dict[str, Any]:
    """One query (eager, and replayed as a CUDA graph) against reading the history once;
    an iteration's begin and append; the history's memory."""
    options = {"device": device, "dtype": torch.float32, "device_solve": device.type == "cuda"}
    est = KernelGradientEstimator(d, EstimatorConfig(history=T0), **options)  # type: ignore[arg-type]
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(d, device=device, generator=g)
    for it in range(T0 // N + 2):
        est.begin(x)
        pts = x + 0.01 * torch.randn(N, d, device=device, generator=g).cumsum(0)
        est.append(pts, 2 * pts, iteration=it)
        x = pts[-1] + 0.01
    est.begin(x)
    q, sq, mu = x + 0.003, torch.zeros(T0, device=device), torch.zeros(d, device=device)
    t_query = timed(lambda: est.query_into(q, sq, mu), device, reps)
    graph_ms, graph_error = None, None
    if device.type == "cuda":
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    est.query_into(q, sq, mu)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                est.query_into(q, sq, mu)
            eager = est.query(q)
            graph.replay()
            sync(device)
            torch.testing.assert_close(mu, eager)
            graph_ms = 1e3 * timed(graph.replay, device, reps)
        except Exception as err:  # report, do not hide
            graph_error = repr(err)
    numbers = iter(range(100, 10**9))
    t_begin = timed(lambda: est.begin(x), device, max(reps // 5, 3))
    t_append = timed(
        lambda: est.append(pts, 2 * pts, iteration=next(numbers), check_finite=False),
        device,
        max(reps // 5, 3),
    )
    bound = 2 * T0 * d * 4 / bandwidth
    return {
        "query_ms": 1e3 * t_query,
        "query_graph_ms": graph_ms,
        "graph_error": graph_error,
        "bound_ms": 1e3 * bound,
        "ratio_to_bound": t_query / bound,
        "ratio_to_bound_graph": None if graph_ms is None else graph_ms / (1e3 * bound),
        "begin_ms": 1e3 * t_begin,
        "append8_never_queried_ms": 1e3 * t_append,
        "history_bytes": est.memory_bytes,
        "two_T0_d_floats_bytes": 2 * T0 * d * 4,
    }


def goal(iteration_ms: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Issue 18's goal per objective: vanilla over the plain loop (<= 1.1) and the oracle's
    milliseconds per OptEx round (< 1)."""
    out = {}
    for name, row in iteration_ms.items():
        ratio = row["vanilla"] / row["raw_adam"]
        oracle = row.get("optex_oracle_ms")
        out[name] = {
            "vanilla_over_plain_loop": ratio,
            "vanilla_over_plain_loop_synced": row["vanilla_synced"] / row["raw_adam_synced"],
            "vanilla_graph_over_plain_loop": row["vanilla_graph"] / row["raw_adam"],
            "optex_graph_over_vanilla_graph": row["optex_graph"] / row["vanilla_graph"],
            "optex_graph_over_plain_loop": row["optex_graph"] / row["raw_adam"],
            "optex_oracle_ms_per_round": oracle,
            "met": ratio <= 1.1 and oracle is not None and oracle < 1.0,
        }
    return out


def summary(result: dict[str, Any]) -> str:
    lines = [f"{result['device']}, torch {result['torch']}, {result['wall_s']:.0f} s"]
    for obj, row in result["iteration_ms"].items():
        van = row["vanilla"]
        cells = [f"{k} {v:.2f} ({v / van:.2f}x)" for k, v in row.items() if k in specs(1.0)]
        lines.append(f"ms/iteration {obj}, steady state: " + ", ".join(cells))
        oracle = {k: round(v, 3) for k, v in row.items() if k.endswith("_oracle_ms")}
        lines.append(f"  oracle ms/round: {oracle}; errors: {row['errors'] or 'none'}")
    for obj, row in result["to_target"].items():
        lines.append(
            f"to vanilla's {result['target_iterations']}-iteration loss, {obj}: "
            + ", ".join(
                f"{k} {v['wall_ms']:.0f} ms ({v['iterations']}{'' if v['reached'] else ' !'})"
                for k, v in row.items()
            )
        )
    for d, e in result["estimator"].items():
        lines.append(f"estimator d={d}: " + json.dumps(e))
    lines.append(f"goal: {json.dumps(result['goal'])}")
    return "\n".join(lines)


def dims_for(small: bool) -> tuple[int, ...]:
    """The Rosenbrock / estimator sizes d of a run."""
    return (200,) if small else (100_000, 1_000_000)


def choose_objectives(
    small: bool, networks: bool, only: str
) -> dict[str, tuple[dict[str, Any], float]]:
    """The objectives to time, by name: ``(registry spec, Adam lr)``. Rosenbrock at the run's
    sizes, the MNIST MLP unless ``small``, :data:`NETWORKS` with ``networks``; ``only`` (comma
    separated names) keeps those. Raises ValueError naming an unknown name and the valid ones."""
    objectives: dict[str, tuple[dict[str, Any], float]] = {
        f"rosenbrock_d{d}": ({"name": "rosenbrock", "dim": d}, 0.01) for d in dims_for(small)
    }
    if not small:
        objectives["mnist_mlp"] = ({"name": "mnist", "model": "mlp", "batch_size": 128}, 1e-3)
    if networks:
        objectives.update(NETWORKS)
    if not only:
        return objectives
    keep = only.split(",")
    unknown = sorted(set(keep) - set(objectives))
    if unknown:
        raise ValueError(
            f"--only: unknown objective(s) {', '.join(unknown)}; valid here:"
            f" {', '.join(objectives)} (--networks adds {', '.join(NETWORKS)})"
        )
    return {k: v for k, v in objectives.items() if k in keep}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--out", default="optex-gpu.json")
    ap.add_argument("--small", action="store_true", help="CPU-sized smoke test (seconds)")
    ap.add_argument(
        "--networks",
        action="store_true",
        help=f"also the issue-19 networks ({', '.join(NETWORKS)}); their data must be cached",
    )
    ap.add_argument("--only", default="", help="comma-separated objective names to keep")
    args = ap.parse_args(argv)
    try:  # bad input fails here, before anything is timed
        objectives = choose_objectives(args.small, args.networks, args.only)
    except ValueError as err:
        ap.error(str(err))
    started = time.time()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)
    dims = dims_for(args.small)
    reps = 3 if args.small else 50
    warm, rounds, block = (1, 1, 1) if args.small else (8, 6, 6)
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "N": N,
        "T0": T0,
        "target_iterations": 3 if args.small else 40,
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    src = torch.empty(2**16 if args.small else 2**28, device=device)
    dst = torch.empty_like(src)
    bandwidth = 2 * src.numel() * 4 / timed(lambda: dst.copy_(src), device, 10)
    result["copy_bandwidth_GBps"] = bandwidth / 1e9
    result["estimator"] = {str(d): estimator_bench(d, device, bandwidth, reps) for d in dims}
    registry = optkit.get_registry()
    result["iteration_ms"], result["to_target"] = {}, {}
    for name, (spec, lr) in objectives.items():
        obj = registry.create("objective", spec)
        obj.prepare(device, torch.float32)
        result["iteration_ms"][name] = iteration_cost(obj, lr, device, warm, rounds, block)
        result["to_target"][name] = to_target(obj, lr, device, result["target_iterations"])
    if device.type == "cuda":
        result["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
    result["goal"] = goal(result["iteration_ms"])
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    result["wall_s"] = time.time() - started
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)
    print(summary(result))


if __name__ == "__main__":
    main()
