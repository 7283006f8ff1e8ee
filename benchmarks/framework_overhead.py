"""What the framework costs, side by side in one run: optkit's ``adam`` iteration against a
plain ``torch.optim.Adam`` loop on the same objective, and the oracle's host time per round.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/framework_overhead.py --out overhead.json

Runs on the CPU (one intra-op thread) and, when CUDA is present, on the GPU too
(``--devices cpu`` or ``--devices cuda`` picks one). ``--small`` runs tiny sizes in seconds
(a smoke run, not a measurement). Public APIs only: the registry, :class:`Oracle`,
:class:`VmapExecutor`, :func:`optkit.runner.run_loop`; the MLP is a timing workload defined
here (a teacher-labelled random data set held on the device).

Per objective (Rosenbrock, exact gradients, Adam lr 0.01; a 3-layer MLP, minibatch 128, Adam
lr 1e-3), milliseconds per iteration, the variants interleaved (block after block, so slow
drifts of the machine hit every variant alike), the median over rounds of the block mean:

* ``plain``: ``opt.zero_grad(); loss = f(x); loss.backward(); opt.step()`` on leaf tensors;
* ``optkit_step``: ``optimizer.step(params, state, oracle)`` of the registered ``adam`` with
  the ``vmap`` executor and the oracle as the runner builds it (on a GPU its finite check
  is read one round late, ``defer_check``): what an iteration of the runner does;
* ``run_loop``: :func:`optkit.runner.run_loop` over the whole block, timed by the
  ``wall_s`` it reports (its steps and its own per-iteration work, not its evaluations);
* ``optkit_step_serial``: ``optkit_step`` with the ``serial`` executor (the default of a
  task without an ``executor`` key); both built-in executors evaluate one point the same way;
* on CUDA also ``optkit_step_check_now``: ``optkit_step`` with the finite check read at once
  (``defer_check=False``: one host sync per step), beside the deferred read;
* with ``--networks`` also issue 19's Fashion-MNIST CNN and Shakespeare transformer at batch
  256 (``--only fashion_cnn_b256,...`` keeps only the named networks);
* on CUDA also the objective ``mlp_wide`` (width 4096, minibatch 2048, 17.8M parameters),
  where the device's work, not the host's, bounds an iteration;
* on CUDA, for objectives that declare ``graph_safe``, also ``optkit_step_graph`` and
  ``run_loop_graph``: the same with the ``vmap`` executor's ``cuda_graph`` (each round's
  forward and backward replayed from a captured CUDA graph);
* ``ratio_step``, ``ratio_run_loop``, ``ratio_step_serial`` (and ``ratio_step_check_now``,
  ``ratio_step_graph``, ``ratio_run_loop_graph``): those over ``plain``;
  ``*_min_ms`` and ``ratio_*_min``: the same from the fastest block of each (on a machine
  shared with other work, the medians move with its load);
* on the CPU also ``*_cpu_ms`` and ``ratio_*_cpu`` (not ``run_loop``): the same from the
  thread's CPU time (``time.thread_time``), which does not count the time the process waits
  while other work has the cores, so it moves less with the load of a shared machine.

The oracle, per round of N = 8 points (``vmap`` executor):

* ``standalone``: ``Oracle.evaluate(points)`` against the same work done bare (drawing the N
  batches with the objective, ``executor.evaluate``), ``own_ms`` the median of the paired
  differences (counting and the finite check; ``own_min_ms`` from the fastest of each), and
  (CUDA) the host synchronisations in one round;
* ``in_optex``: inside the registered ``optex`` (base ``adam``, parallelism 8), the host time
  spent in ``Oracle.evaluate`` per iteration (through an :class:`Oracle` subclass), the part
  of it inside the executor, and the rest (``own_ms``: batches, counting, the finite check,
  including its wait for the device's queue).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import torch

from optkit.executors import VmapExecutor
from optkit.interfaces import Batch, Evaluation, Objective, Params
from optkit.oracle import Oracle
from optkit.registry import get_registry
from optkit.runner import run_loop
from optkit.tasks import Budget
from optkit.testing import GPU_STUDY_NETWORKS, TimedOracle

N = 8


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class BenchMLP(Objective):
    """A timing workload: a 3-layer tanh MLP on a fixed random teacher-labelled data set held
    on the device; minibatches of 128 indices drawn with the cell's generator."""

    name: ClassVar[str] = "bench_mlp"
    summary: ClassVar[str] = "benchmark-only MLP"

    def __init__(
        self, *, width: int = 512, inputs: int = 256, n: int = 8192, batch: int = 128
    ) -> None:
        self.width, self.inputs, self.n, self.batch = width, inputs, n, batch

    def prepare(self, device: torch.device, dtype: torch.dtype) -> None:
        super().prepare(device, dtype)
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(self.n, self.inputs, generator=g).to(device, dtype)
        teacher = torch.randn(self.inputs, 10, generator=g).to(device, dtype)
        self.y = (self.x @ teacher).argmax(1)

    def init_params(self, generator: torch.Generator) -> Params:
        def layer(a: int, b: int) -> torch.Tensor:
            w = torch.randn(a, b, generator=generator) / math.sqrt(a)
            return w.to(self.device, self.dtype)

        def zeros(b: int) -> torch.Tensor:
            return torch.zeros(b, device=self.device, dtype=self.dtype)

        i, w = self.inputs, self.width
        return {
            "w1": layer(i, w),
            "b1": zeros(w),
            "w2": layer(w, w),
            "b2": zeros(w),
            "w3": layer(w, 10),
            "b3": zeros(10),
        }

    def sample_batch(self, generator: torch.Generator, params: Params) -> torch.Tensor:
        idx = torch.randint(0, self.n, (self.batch,), generator=generator)
        return idx.to(self.device)

    def loss(self, params: Params, batch: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.x[batch] @ params["w1"] + params["b1"])
        h = torch.tanh(h @ params["w2"] + params["b2"])
        logits = h @ params["w3"] + params["b3"]
        return torch.nn.functional.cross_entropy(logits, self.y[batch])

    @torch.no_grad()
    def evaluate(self, params: Params) -> dict[str, float]:
        return {"loss": float(self.loss(params, torch.arange(self.n, device=self.device)))}


# issue 19's GPU study models at batch 256 (their data must be in the cache): many parameter
# tensors and small kernels, so the host's launches can bound an iteration
NETWORKS = GPU_STUDY_NETWORKS


def objectives(
    small: bool, device: torch.device, networks: bool = False, only: str = ""
) -> dict[str, tuple[Objective, float]]:
    """name -> (prepared objective, Adam learning rate); with ``networks`` also
    :data:`NETWORKS`; ``only`` (comma-separated names) keeps those (checked by
    :func:`check_only` before anything is built)."""
    reg = get_registry()
    keep = set(only.split(",")) if only else None
    out: dict[str, tuple[Objective, float]] = {}
    if networks:
        for name, (spec, lr) in NETWORKS.items():
            if keep is None or name in keep:
                net = reg.create("objective", spec)
                net.prepare(device, torch.float32)
                out[name] = (net, lr)
    if keep is not None:  # --only names networks only (check_only)
        return out
    if small:
        dims = [100]
    elif device.type == "cuda":
        dims = [100_000, 1_000_000]
    else:  # d = 1e3: the host's own work dominates, as it does for small kernels on a GPU
        dims = [1000, 100_000]
    for d in dims:
        obj = reg.create("objective", {"name": "rosenbrock", "dim": d})
        obj.prepare(device, torch.float32)
        out[f"rosenbrock_d{d:.0e}".replace("+0", "")] = (obj, 0.01)
    mlp = BenchMLP(width=32, inputs=16, n=512) if small else BenchMLP()
    mlp.prepare(device, torch.float32)
    out["mlp"] = (mlp, 1e-3)
    if device.type == "cuda" and not small:  # the device's work dominates: 17.8M parameters
        wide = BenchMLP(width=4096, n=65536, batch=2048)
        wide.prepare(device, torch.float32)
        out["mlp_wide"] = (wide, 1e-4)
    return out


# ----------------------------------------------------------------------- iteration cost
class Variant:
    """One way of running Adam on an objective; ``block(k)`` runs k iterations."""

    def block(self, k: int) -> None:
        raise NotImplementedError


class Plain(Variant):
    """The plain training loop: leaf tensors, backward, ``torch.optim.Adam``."""

    def __init__(self, obj: Objective, lr: float, seed: int = 0) -> None:
        self.obj = obj
        self.gen = torch.Generator().manual_seed(seed)
        start = obj.init_params(self.gen)
        self.leaves = {k: v.clone().requires_grad_(True) for k, v in start.items()}
        self.opt = torch.optim.Adam(list(self.leaves.values()), lr=lr)

    def block(self, k: int) -> None:
        for _ in range(k):
            self.opt.zero_grad()
            loss = self.obj.loss(self.leaves, self.obj.sample_batch(self.gen, self.leaves))
            loss.backward()
            self.opt.step()


class OptkitStep(Variant):
    """The registered optimizer's ``step`` with an oracle over the registered ``executor``
    (``defer``: read each round's finite check one round late, as the runner does on a GPU;
    ``None`` decides as the runner does)."""

    def __init__(
        self,
        obj: Objective,
        spec: dict[str, Any],
        seed: int = 0,
        executor: str = "vmap",
        defer: bool | None = None,
        cuda_graph: bool = False,
    ) -> None:
        reg = get_registry()
        self.gen = torch.Generator().manual_seed(seed)
        self.opt = reg.create("optimizer", spec)
        self.params = obj.init_params(self.gen)
        self.state = self.opt.init(self.params)
        graph = {"cuda_graph": True} if cuda_graph else {}
        executor_ = reg.create("executor", {"name": executor, **graph})
        # as run_loop builds it: on a GPU each round's finite check is read one round late
        defer = obj.device.type == "cuda" if defer is None else defer
        self.oracle = Oracle(obj, executor_, self.gen, defer_check=defer)

    def block(self, k: int) -> None:
        for _ in range(k):
            self.params, self.state, _ = self.opt.step(self.params, self.state, self.oracle)


class RunLoop(Variant):
    """:func:`optkit.runner.run_loop` for k iterations, evaluating at both ends only; its
    time is the ``wall_s`` it reports (optimization time: the evaluations are not in it)."""

    def __init__(self, obj: Objective, spec: dict[str, Any], cuda_graph: bool = False) -> None:
        self.obj, self.opt = obj, get_registry().create("optimizer", spec)
        self.wall_s = 0.0
        self.cuda_graph = cuda_graph

    def block(self, k: int) -> None:
        executor = VmapExecutor(cuda_graph=self.cuda_graph)
        row = run_loop(self.obj, self.opt, executor, 0, Budget(k, eval_every=k), "loss")
        self.wall_s = float(row["wall_s"])


def iteration_cost(
    obj: Objective, lr: float, device: torch.device, rounds: int, block: int
) -> dict[str, float]:
    """Milliseconds per iteration of each variant and the ratios to ``plain``."""
    spec = {"name": "adam", "lr": lr}
    variants: dict[str, Variant] = {
        "plain": Plain(obj, lr),
        "optkit_step": OptkitStep(obj, spec),
        "run_loop": RunLoop(obj, spec),
        "optkit_step_serial": OptkitStep(obj, spec, executor="serial"),
    }
    if device.type == "cuda":  # the same step reading its finite check at once (one sync)
        variants["optkit_step_check_now"] = OptkitStep(obj, spec, defer=False)
        if obj.graph_safe:  # the executor's rounds replayed from CUDA graphs
            variants["optkit_step_graph"] = OptkitStep(obj, spec, cuda_graph=True)
            variants["run_loop_graph"] = RunLoop(obj, spec, cuda_graph=True)
    for v in variants.values():
        v.block(3)
    times: dict[str, list[float]] = {label: [] for label in variants}
    cpu: dict[str, list[float]] = {
        label: [] for label, v in variants.items() if not isinstance(v, RunLoop)
    }
    order = list(variants.items())
    for r in range(rounds):
        for label, v in order if r % 2 == 0 else order[::-1]:  # no variant always first
            sync(device)
            t, c = time.perf_counter(), time.thread_time()
            v.block(block)
            sync(device)
            spent = v.wall_s if isinstance(v, RunLoop) else time.perf_counter() - t
            times[label].append(spent / block)
            if label in cpu:
                cpu[label].append((time.thread_time() - c) / block)
    out = {f"{label}_ms": 1e3 * statistics.median(ts) for label, ts in times.items()}
    out.update({f"{label}_min_ms": 1e3 * min(ts) for label, ts in times.items()})
    for key, label in RATIOS.items():
        if label in variants:
            out[key] = out[f"{label}_ms"] / out["plain_ms"]
            out[f"{key}_min"] = out[f"{label}_min_ms"] / out["plain_min_ms"]
    if device.type == "cpu":  # on a GPU the host's CPU time is not the iteration's cost
        out.update({f"{label}_cpu_ms": 1e3 * statistics.median(ts) for label, ts in cpu.items()})
        for key, label in RATIOS.items():
            if label in cpu:
                out[f"{key}_cpu"] = out[f"{label}_cpu_ms"] / out["plain_cpu_ms"]
    return out


RATIOS = {
    "ratio_step": "optkit_step",
    "ratio_run_loop": "run_loop",
    "ratio_step_serial": "optkit_step_serial",
    "ratio_step_check_now": "optkit_step_check_now",
    "ratio_step_graph": "optkit_step_graph",
    "ratio_run_loop_graph": "run_loop_graph",
}
"""Ratio name -> the variant it divides by ``plain`` (``*_min``: the same of the fastest
blocks, ``*_cpu``: of the thread's CPU time; both less sensitive to other load on a shared
machine)."""


# ----------------------------------------------------------------------- the oracle
def perturbed(obj: Objective, n: int, seed: int = 1) -> list[Params]:
    gen = torch.Generator().manual_seed(seed)
    start = obj.init_params(gen)
    return [{k: v + 1e-3 * i for k, v in start.items()} for i in range(n)]


def oracle_standalone(
    obj: Objective, device: torch.device, reps: int, count_syncs: bool
) -> dict[str, float]:
    """One round of N points through the oracle and the same work bare, interleaved."""
    points = perturbed(obj, N)
    executor = VmapExecutor()
    oracle = Oracle(obj, executor, torch.Generator().manual_seed(0))
    bare_gen = torch.Generator().manual_seed(0)

    def bare() -> None:
        batches = [obj.sample_batch(bare_gen, p) for p in points]
        executor.evaluate(obj, points, batches)

    def through() -> None:
        oracle.evaluate(points)

    fns: dict[str, Callable[[], None]] = {"bare": bare, "oracle": through}
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {label: [] for label in fns}
    order = list(fns.items())
    for r in range(reps):
        for label, fn in order if r % 2 == 0 else order[::-1]:
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times[label].append(time.perf_counter() - t)
    out = {f"{label}_ms": 1e3 * statistics.median(ts) for label, ts in times.items()}
    pairs = zip(times["oracle"], times["bare"], strict=True)
    out["own_ms"] = 1e3 * statistics.median(a - b for a, b in pairs)  # paired: robust to drift
    out["own_min_ms"] = 1e3 * (min(times["oracle"]) - min(times["bare"]))
    if count_syncs:
        from optkit.testing import count_syncs as counted

        sync(device)
        out["syncs_per_round"] = float(counted(through))
    return out


class TimedExecutor(VmapExecutor):
    """The ``vmap`` executor, adding up the host seconds spent in :meth:`evaluate`."""

    def __init__(self) -> None:
        super().__init__()
        self.spent = 0.0

    def evaluate(
        self, objective: Objective, points: Sequence[Params], batches: Sequence[Batch]
    ) -> Evaluation:
        t = time.perf_counter()
        try:
            return super().evaluate(objective, points, batches)
        finally:
            self.spent += time.perf_counter() - t


def oracle_in_optex(
    obj: Objective, lr: float, device: torch.device, warm: int, iters: int, drain: bool
) -> dict[str, float]:
    """Milliseconds per OptEx iteration in the oracle and in its executor (host time; the
    oracle's includes its finite check's wait for the device, after the queue is drained
    first when ``drain``)."""
    spec = {"name": "optex", "base": "adam", "base_config": {"lr": lr}, "parallelism": N}
    opt = get_registry().create("optimizer", spec)
    gen = torch.Generator().manual_seed(0)
    params = obj.init_params(gen)
    state = opt.init(params)
    executor = TimedExecutor()
    oracle = TimedOracle(obj, executor, gen)
    oracle.drain = drain
    for _ in range(warm):
        params, state, _ = opt.step(params, state, oracle)
    sync(device)
    oracle.spent, oracle.rounds, executor.spent = 0.0, 0, 0.0
    t = time.perf_counter()
    for _ in range(iters):
        params, state, _ = opt.step(params, state, oracle)
    sync(device)
    total = time.perf_counter() - t
    return {
        "iteration_ms": 1e3 * total / iters,
        "rounds_per_iteration": oracle.rounds / iters,
        "oracle_ms": 1e3 * oracle.spent / iters,
        "executor_ms": 1e3 * executor.spent / iters,
        "own_ms": 1e3 * (oracle.spent - executor.spent) / iters,
    }


# ----------------------------------------------------------------------- driver
def check_only(only: str, networks: bool) -> None:
    """Raise ValueError unless every name in ``only`` is a network of :data:`NETWORKS` (with
    ``networks``); ``--only`` selects among the networks only."""
    unknown = sorted(set(only.split(",")) - set(NETWORKS)) if only else []
    if only and not networks:
        raise ValueError("--only selects networks: it needs --networks")
    if unknown:
        raise ValueError(
            f"--only: unknown network(s) {', '.join(unknown)}; valid: {', '.join(NETWORKS)}"
        )


def bench_device(
    device: torch.device, small: bool, networks: bool = False, only: str = ""
) -> dict[str, Any]:
    rounds, block = (3, 5) if small else (15, 20)
    warm, iters = (3, 5) if small else ((10, 30) if device.type == "cuda" else (5, 12))
    out: dict[str, Any] = {}
    if device.type == "cuda":
        out["device_name"] = torch.cuda.get_device_name(device)
    for name, (obj, lr) in objectives(small, device, networks, only).items():
        print(f"[{device.type}] {name}", file=sys.stderr, flush=True)
        out[name] = {
            "iteration": iteration_cost(obj, lr, device, rounds, block),
            "oracle_standalone": oracle_standalone(
                obj, device, reps=5 if small else 40, count_syncs=device.type == "cuda"
            ),
            "oracle_in_optex": oracle_in_optex(
                obj, lr, device, warm=warm, iters=iters, drain=False
            ),
        }
        if device.type == "cuda":
            r = out[name]["oracle_in_optex_drained"] = oracle_in_optex(
                obj, lr, device, warm=warm, iters=iters, drain=True
            )
            del r["iteration_ms"]  # the extra synchronisation slows the iteration
    return out


def summary(result: dict[str, Any]) -> str:
    lines = []
    for dev, per in result["devices"].items():
        for name, r in per.items():
            if not isinstance(r, dict):
                continue
            it, so, ox = r["iteration"], r["oracle_standalone"], r["oracle_in_optex"]
            cpu = f" (CPU time: step {it['ratio_step_cpu']:.2f}x)" if "ratio_step_cpu" in it else ""
            if "ratio_step_check_now" in it:
                cpu += f" (check read at once: {it['ratio_step_check_now']:.2f}x)"
            if "ratio_step_graph" in it:
                cpu += (
                    f" (graphed rounds: step {it['ratio_step_graph']:.2f}x,"
                    f" run_loop {it['ratio_run_loop_graph']:.2f}x)"
                )
            lines.append(
                f"{dev:4s} {name:18s} plain {it['plain_ms']:.3f} ms, optkit step"
                f" {it['optkit_step_ms']:.3f} ms ({it['ratio_step']:.2f}x), run_loop"
                f" {it['run_loop_ms']:.3f} ms ({it['ratio_run_loop']:.2f}x), serial executor"
                f" {it['ratio_step_serial']:.2f}x{cpu}; oracle round"
                f" own {so['own_ms']:.3f} of {so['oracle_ms']:.3f} ms; in optex: oracle"
                f" {ox['oracle_ms']:.3f} ms (own {ox['own_ms']:.3f}) of {ox['iteration_ms']:.3f}"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the JSON file to write")
    parser.add_argument("--devices", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--small", action="store_true", help="tiny sizes (smoke run)")
    parser.add_argument(
        "--networks",
        action="store_true",
        help=f"also issue 19's networks ({', '.join(NETWORKS)}); their data must be cached",
    )
    parser.add_argument("--only", default="", help="comma-separated networks: only those")
    args = parser.parse_args(argv)
    try:
        check_only(args.only, args.networks)
    except ValueError as err:
        parser.error(str(err))
    torch.set_num_threads(1)
    devices = ["cpu", "cuda"] if args.devices == "auto" else [args.devices]
    if not torch.cuda.is_available():
        if args.devices == "cuda":
            parser.error("--devices cuda: CUDA is not available on this machine")
        devices = ["cpu"]
    result: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
        },
        "small": args.small,
        "devices": {
            d: bench_device(torch.device(d), args.small, args.networks, args.only) for d in devices
        },
    }
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=2)
    print(summary(result))


if __name__ == "__main__":
    main()
