"""OptEx on one GPU, side by side in one run: iteration cost against vanilla, the estimator
against the memory-bandwidth bound, history footprint, wall-clock to vanilla's loss.

    python3 -m pip install --no-deps --no-build-isolation -e . -q
    PYTHONPATH=$PWD:$PWD/plugins python3 benchmarks/optex_gpu.py --out optex-gpu.json

Objectives: Rosenbrock at d = 1e5 and d = 1e6 (exact gradients, Adam lr 0.01) and a
benchmark-only MLP (1.3M parameters, minibatch 128, Adam lr 1e-3). Optimizers, N = 8, vmap
executor: ``vanilla`` (the framework's ``adam``), ``raw_adam`` (a plain eager
``torch.optim.Adam`` loop outside the framework, for honesty about the framework's own
overhead), ``optex`` (defaults: fused flat proxy loop replayed as a CUDA graph with W solved
on the device inside it, append and true step replayed from graphs), ``optex_host_solve``
(``device_solve = false``: W solved on the host, the default before 2026-11-29's third
session), ``optex_eager`` (fused, ``cuda_graph = false``), ``optex_generic`` (``fused =
false``: the per-step dict loop), ``optex_refit10``, ``optex_lag0`` (the fit on the critical
path), ``optex_lag1`` (``fit_lag = 1``, the default until 2026-11-29's third session),
``data_parallel`` and ``target``. The variants' iterations are interleaved (see
:func:`iteration_cost`); a second section times the host phases of ``optex`` and
``optex_host_solve`` without a profiler.

``--profile DIR`` also writes a ``torch.profiler`` table and Chrome trace of a few OptEx
iterations per objective (``optex`` and ``optex_host_solve``).

Writes one JSON file and prints a summary. ``--small`` runs the same code at a CPU-friendly
size in seconds (a smoke test; no graphs on a CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
from optkit_optex.estimator import KernelGradientEstimator

from optkit.interfaces import Objective, Params
from optkit.oracle import Oracle
from optkit.registry import get_registry
from optkit.testing import count_syncs

N = 8
T0 = 50


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(
    fn: Callable[[], Any], device: torch.device, reps: int, warm: int = 3, pause: float = 0.0
) -> float:
    """Median seconds of ``fn`` over ``reps`` synchronized calls after ``warm`` calls; each
    call after ``pause`` idle seconds (time for background work, e.g. a lagged fit)."""
    out = []
    for i in range(warm + reps):
        time.sleep(pause)
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        if i >= warm:
            out.append(time.perf_counter() - t)
    return statistics.median(out)


class MLPObjective(Objective):
    """A timing workload only: a 3-layer MLP (tanh) on a fixed random teacher-labelled data set
    held on the device; minibatches of 128 drawn with the cell's generator (indices drawn on
    the host, sent through pinned memory without blocking)."""

    name: ClassVar[str] = "bench_mlp"
    summary: ClassVar[str] = "benchmark-only MLP"

    def __init__(self, *, width: int = 512, inputs: int = 256, n: int = 8192) -> None:
        self.width, self.inputs, self.n = width, inputs, n

    def prepare(self, device: torch.device, dtype: torch.dtype) -> None:
        super().prepare(device, dtype)
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(self.n, self.inputs, generator=g).to(device, dtype)
        teacher = torch.randn(self.inputs, 10, generator=g).to(device, dtype)
        self.y = (self.x @ teacher).argmax(1)

    def init_params(self, generator: torch.Generator) -> Params:
        w, i = self.width, self.inputs

        def layer(a: int, b: int) -> torch.Tensor:
            return (torch.randn(a, b, generator=generator) / math.sqrt(a)).to(
                self.device, self.dtype
            )

        return {
            "w1": layer(i, w),
            "b1": torch.zeros(w, device=self.device, dtype=self.dtype),
            "w2": layer(w, w),
            "b2": torch.zeros(w, device=self.device, dtype=self.dtype),
            "w3": layer(w, 10),
            "b3": torch.zeros(10, device=self.device, dtype=self.dtype),
        }

    def sample_batch(self, generator: torch.Generator, params: Params) -> torch.Tensor:
        idx = torch.randint(0, self.n, (128,), generator=generator)
        if self.device.type == "cuda":
            return idx.pin_memory().to(self.device, non_blocking=True)
        return idx.to(self.device)

    def loss(self, params: Params, batch: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.x[batch] @ params["w1"] + params["b1"])
        h = torch.tanh(h @ params["w2"] + params["b2"])
        logits = h @ params["w3"] + params["b3"]
        return torch.nn.functional.cross_entropy(logits, self.y[batch])

    @torch.no_grad()
    def evaluate(self, params: Params) -> dict[str, float]:
        return {"loss": float(self.loss(params, torch.arange(self.n, device=self.device)))}


# ------------------------------------------------------------------------------ optimizers
def specs(lr: float) -> dict[str, dict[str, Any]]:
    base = {"base": "adam", "base_config": {"lr": lr}, "parallelism": N}
    return {
        "vanilla": {"name": "adam", "lr": lr},
        "raw_adam": {"raw": True, "lr": lr},
        "optex": {"name": "optex", **base},
        "optex_host_solve": {"name": "optex", "device_solve": False, **base},
        "optex_eager": {"name": "optex", "cuda_graph": False, **base},
        "optex_generic": {"name": "optex", "fused": False, **base},
        "optex_refit10": {"name": "optex", "refit_every": 10, **base},
        "optex_lag0": {"name": "optex", "fit_lag": 0, **base},
        "optex_lag1": {"name": "optex", "fit_lag": 1, **base},
        "data_parallel": {"name": "data_parallel", **base},
        "target": {"name": "target", **base},
    }


class Runner:
    """One optimizer on one objective: ``step()`` advances one iteration; ``params()``."""

    def __init__(self, obj: Objective, spec: dict[str, Any], seed: int = 0) -> None:
        self.obj = obj
        self.gen = torch.Generator().manual_seed(seed)
        start = obj.init_params(self.gen)
        self.raw = bool(spec.get("raw"))
        if self.raw:  # a plain training loop: leaf tensors, backward, torch.optim.Adam
            self.leaves = {k: v.clone().requires_grad_(True) for k, v in start.items()}
            self.torch_opt = torch.optim.Adam(list(self.leaves.values()), lr=spec["lr"])
            return
        reg = get_registry()
        self.opt = reg.create("optimizer", spec)
        self.p, self.s = start, self.opt.init(start)
        self.oracle = Oracle(obj, reg.create("executor", {"name": "vmap"}), self.gen)

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


def iteration_cost(
    obj: Objective, lr: float, device: torch.device, warm: int, rounds: int, block: int
) -> dict[str, Any]:
    """Milliseconds per iteration, two ways, the variants interleaved (after ``warm``
    iterations of each, ``rounds`` rounds over the variants), so that slow drifts of the
    machine (clocks, other load) hit every variant alike:

    * ``label``: steady state, as a training loop runs: ``block`` iterations back to back
      with one synchronisation at the end (after one untimed iteration, which may wait for
      the previous variant's lagged fit); the median over rounds of the block mean.
    * ``label_synced``: every iteration synchronized on its own (the device's tail of one
      iteration cannot overlap the host work of the next); the median over all of them.

    For OptEx also the number of synchronizing CUDA calls in one iteration and the graphs'
    status."""
    runs = {label: Runner(obj, spec) for label, spec in specs(lr).items()}
    for run in runs.values():
        for _ in range(warm):
            run.step()
    steady: dict[str, list[float]] = {label: [] for label in runs}
    samples: dict[str, list[float]] = {label: [] for label in runs}
    for _ in range(rounds):
        for label, run in runs.items():
            run.step()
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
                samples[label].append(time.perf_counter() - t)
    out: dict[str, Any] = {label: 1e3 * statistics.median(v) for label, v in steady.items()}
    out.update({f"{label}_synced": 1e3 * statistics.median(v) for label, v in samples.items()})
    for label, run in runs.items():
        if label.startswith("optex") and device.type == "cuda":
            out[f"{label}_syncs_per_iteration"] = count_syncs(run.step)
            fused = getattr(run.s, "fused", None)
            if fused is not None:
                out[f"{label}_graph"] = {
                    "captured": fused.graph is not None,
                    "failed": fused.graph_failed,
                    "replays": fused.replays,
                    "solve_in_graph": fused.solve_in_graph,
                    "append_graphs": len(run.s.estimator._append_graphs),
                    "append_graph_failed": run.s.estimator.append_graph_failed,
                    "fallbacks": run.s.estimator.fallbacks,
                }
    del runs
    return out


def to_target(
    obj: Objective, lr: float, device: torch.device, vanilla_iters: int
) -> dict[str, Any]:
    """Wall-clock (optimizer steps only, synchronized; the loss checks between steps are not
    counted) and iterations to reach vanilla's ``vanilla_iters``-iteration loss."""
    goal = None
    out: dict[str, Any] = {}
    for label, spec in specs(lr).items():
        run = Runner(obj, spec)
        wall, iters = 0.0, 0
        while iters < vanilla_iters:
            sync(device)
            t0 = time.perf_counter()
            run.step()
            sync(device)
            wall += time.perf_counter() - t0
            iters += 1
            if goal is not None and obj.evaluate(run.params())["loss"] <= goal:
                break
        loss = obj.evaluate(run.params())["loss"]
        if goal is None:
            goal = loss
        out[label] = {"iterations": iters, "wall_ms": 1e3 * wall, "loss": loss}
        out[label]["reached"] = bool(loss <= goal)
    return out


PHASES = (
    ("optkit_optex.estimator", "KernelGradientEstimator", "begin"),
    ("optkit_optex.estimator", "KernelGradientEstimator", "append"),
    ("optkit_optex.fused", "FlatProxy", "run"),
    ("optkit_optex.fused", "FlatProxy", "true_step"),
    ("optkit.oracle", "Oracle", "evaluate"),
    ("optkit_optex.flat", "Flattener", "flatten_many"),
)
"""The methods of one OptEx iteration that the phase timing and the profiler name."""


@contextlib.contextmanager
def wrapped_phases(
    wrap: Callable[[Callable[..., Any], str], Callable[..., Any]],
) -> Iterator[None]:
    """Replace each method of :data:`PHASES` by ``wrap(method, "Class.method")`` for the
    duration of the block; the originals are restored on exit."""
    import importlib

    originals = []
    for module, cls_name, attr in PHASES:
        cls = getattr(importlib.import_module(module), cls_name)
        originals.append((cls, attr, getattr(cls, attr)))
    for cls, attr, fn in originals:
        setattr(cls, attr, wrap(fn, f"{cls.__name__}.{attr}"))
    try:
        yield
    finally:
        for cls, attr, fn in originals:
            setattr(cls, attr, fn)


def phase_times(
    obj: Objective, lr: float, device: torch.device, iters: int = 30
) -> dict[str, dict[str, float]]:
    """Host milliseconds per iteration spent in each phase of ``optex`` and
    ``optex_host_solve`` (no profiler: ``perf_counter`` around the methods, no
    synchronisation inside, so asynchronous work counts only its launch; the oracle's
    phase includes its wait for the device), and the synchronized total per iteration."""
    spent: dict[str, float] = {}

    def timed_method(fn: Callable[..., Any], label: str) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - t

        return wrapper

    out: dict[str, dict[str, float]] = {}
    with wrapped_phases(timed_method):
        for label in ("optex", "optex_host_solve"):
            run = Runner(obj, specs(lr)[label])
            for _ in range(8):
                run.step()
            spent.clear()
            sync(device)
            t = time.perf_counter()
            for _ in range(iters):
                run.step()
                sync(device)
            total = time.perf_counter() - t
            row = {k: 1e3 * v / iters for k, v in spent.items()}
            row["other"] = 1e3 * total / iters - sum(row.values())
            row["total"] = 1e3 * total / iters
            out[label] = row
    return out


def profile(obj: Objective, lr: float, name: str, device: torch.device, out: str) -> None:
    """``torch.profiler`` over 3 iterations (after 8 warm-up ones) of ``optex`` and
    ``optex_host_solve``: a table by host time and a Chrome trace per variant, in ``out``;
    the :data:`PHASES` appear in the trace as ``phase:Class.method`` ranges."""
    import os

    from torch.profiler import record_function

    def labelled(fn: Callable[..., Any], label: str) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with record_function(f"phase:{label}"):
                return fn(*args, **kwargs)

        return wrapper

    os.makedirs(out, exist_ok=True)
    with wrapped_phases(labelled):
        _profile_variants(obj, lr, name, device, out)


def _profile_variants(obj: Objective, lr: float, name: str, device: torch.device, out: str) -> None:
    import os

    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    for label in ("optex", "optex_host_solve"):
        run = Runner(obj, specs(lr)[label])
        for _ in range(8):
            run.step()
        sync(device)
        with torch_profile(activities=activities) as prof:
            for _ in range(3):
                run.step()
            sync(device)
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)
        with open(os.path.join(out, f"{name}_{label}.txt"), "w") as fh:
            fh.write(table)
        prof.export_chrome_trace(os.path.join(out, f"{name}_{label}.json"))


# ------------------------------------------------------------------------------ estimator
def copy_bandwidth(numel: int, device: torch.device) -> float:
    """Bytes per second of a device-to-device copy (read + write) of ``numel`` floats."""
    src = torch.empty(numel, device=device)
    dst = torch.empty_like(src)
    return 2 * numel * 4 / timed(lambda: dst.copy_(src), device, 10)


def estimator_bench(d: int, device: torch.device, bw: float, reps: int) -> dict[str, Any]:
    """One query (eager and replayed as a CUDA graph) against reading the history once."""
    # The device path (opt-in, first measured by this benchmark): device solve + append graph.
    est = KernelGradientEstimator(
        d, T0, device=device, dtype=torch.float32, device_solve=device.type == "cuda"
    )
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(d, device=device, generator=g)
    for it in range(12):
        est.begin(x)
        pts = x + 0.01 * torch.randn(5, d, device=device, generator=g).cumsum(0)
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
    # Default fit_lag = 2: begin's own cost, the lagged fits having had 5 ms each (about an
    # iteration's proxy loop, oracle round and append) to finish in the worker thread.
    t_begin = timed(lambda: est.begin(x), device, max(reps // 5, 3), pause=0.005)
    est.fitter.fit_lag = 0  # the synchronous fit, on the critical path
    t_begin_sync = timed(lambda: est.begin(x), device, max(reps // 5, 3))
    pts8 = x + 0.01 * torch.randn(N, d, device=device, generator=g).cumsum(0)
    t_append = timed(
        lambda: est.append(pts8, 2 * pts8, iteration=99, check_finite=False),
        device,
        max(reps // 5, 3),
    )
    # begin + append of one iteration (N points, the first N - 1 with queried distances), as
    # the fused step issues them: the device solve (eager here) and the append graph.
    est.fitter.fit_lag = 2
    sq7 = torch.zeros(N - 1, T0, device=device)
    numbers = itertools.count(100)

    def begin_append() -> None:
        est.begin(x)
        est.append(pts8, 2 * pts8, iteration=next(numbers), queried=sq7, check_finite=False)

    t_both = timed(begin_append, device, max(reps // 5, 3), pause=0.005)
    syncs: dict[str, int | None] = {"solve": None, "append": None}
    if device.type == "cuda":  # the device solve and a (graphed) append: no synchronisation
        syncs["solve"] = count_syncs(est.solve_device)
        syncs["append"] = count_syncs(
            lambda: est.append(pts8, 2 * pts8, iteration=200, queried=sq7, check_finite=False)
        )
    # The heuristic fit itself (host, float64, T0 x T0): with this host's default intra-op
    # threads on the main thread, and in the fit worker (one thread).
    from optkit_optex.fit_schedule import _fit_pool

    sq_h, ys_h = est.sqdist, est._ys_host
    t_fit_main = timed(lambda: est.fitter.fit(sq_h, ys_h), device, 20)
    t_fit_worker = timed(
        lambda: _fit_pool().submit(est.fitter.fit, sq_h, ys_h).result(), device, 20
    )
    # The append's Gram of the N new points: cuBLAS's plain product against row_gram.
    from optkit_optex.gram import row_gram

    t_gram_plain = timed(lambda: pts8 @ pts8.T, device, reps)
    t_gram_chunked = timed(lambda: row_gram(pts8), device, reps)
    bound = 2 * T0 * d * 4 / bw
    every = sum(
        v.numel() * v.element_size() for v in vars(est).values() if isinstance(v, torch.Tensor)
    )
    return {
        "query_ms": 1e3 * t_query,
        "query_graph_ms": graph_ms,
        "graph_error": graph_error,
        "bound_ms": 1e3 * bound,
        "ratio_to_bound": t_query / bound,
        "ratio_to_bound_graph": None if graph_ms is None else graph_ms / (1e3 * bound),
        "begin_ms": 1e3 * t_begin,
        "begin_fit_lag0_ms": 1e3 * t_begin_sync,
        "append8_never_queried_ms": 1e3 * t_append,
        "begin_append_ms": 1e3 * t_both,
        "gram8_plain_ms": 1e3 * t_gram_plain,
        "gram8_row_gram_ms": 1e3 * t_gram_chunked,
        "fit_ms_main_thread": 1e3 * t_fit_main,
        "fit_ms_worker_one_thread": 1e3 * t_fit_worker,
        "main_threads": torch.get_num_threads(),
        "device_solve": est.device_solve,
        "append_graph": {
            "captured": len(est._append_graphs),
            "failed": est.append_graph_failed,
        },
        "syncs_solve": syncs["solve"],
        "syncs_append": syncs["append"],
        "history_bytes": est.memory_bytes,
        "two_T0_d_floats_bytes": 2 * T0 * d * 4,
        "all_estimator_buffers_bytes": every,
    }


def ensure_registry() -> None:
    """Use the installed entry points, or (running from a plain checkout) load the built-in
    plugin modules this benchmark needs directly."""
    import importlib

    from optkit import plugins
    from optkit.registry import Registry, set_registry

    if "optex" in get_registry().names("optimizer"):
        return
    modules = [
        "optkit.executors",
        "optkit_baselines.plugin",
        "optkit_synthetic.plugin",
        "optkit_optex.plugin",
    ]
    set_registry(
        Registry(plugins.load(extra_plugins=[(m, importlib.import_module(m)) for m in modules]))
    )


def summary(result: dict[str, Any]) -> str:
    lines = [f"{result['device']}, torch {result['torch']}, {result['wall_s']:.0f} s"]
    for obj, row in result["iteration_ms"].items():
        for suffix, what in (("", "steady state"), ("_synced", "each synchronized")):
            van = row[f"vanilla{suffix}"]
            cells = [
                f"{k.removesuffix(suffix)} {row[k]:.2f} ({row[k] / van:.2f}x)"
                for k in row
                if isinstance(row[k], float)
                and k.endswith(suffix)
                and not (suffix == "" and k.endswith("_synced"))
            ]
            lines.append(f"ms/iteration {obj}, {what}: " + ", ".join(cells))
        syncs = {k: v for k, v in row.items() if k.endswith("syncs_per_iteration")}
        if syncs:
            lines.append(f"  syncs: {syncs}; graph: {row.get('optex_graph')}")
    for obj, row in result["to_target"].items():
        lines.append(
            f"to vanilla's 40-iteration loss, {obj}: "
            + ", ".join(
                f"{k} {v['wall_ms']:.0f} ms ({v['iterations']}{'' if v['reached'] else ' !'})"
                for k, v in row.items()
            )
        )
    for obj, variants in result.get("phase_ms", {}).items():
        for label, row in variants.items():
            lines.append(
                f"host ms per iteration, {obj} {label}: "
                + ", ".join(f"{k} {v:.3f}" for k, v in row.items())
            )
    for d, e in result["estimator"].items():
        graph = e["query_graph_ms"]
        lines.append(
            f"estimator d={d}: query {e['query_ms']:.3f} ms ({e['ratio_to_bound']:.2f}x bound"
            f" {e['bound_ms']:.3f}), graph "
            + ("-" if graph is None else f"{graph:.3f} ms ({e['ratio_to_bound_graph']:.2f}x)")
            + f", begin {e['begin_ms']:.2f} ms (fit_lag 0: {e['begin_fit_lag0_ms']:.2f} ms),"
            f" append8 {e['append8_never_queried_ms']:.2f} ms,"
            f" begin+append {e['begin_append_ms']:.2f} ms (device solve {e['device_solve']},"
            f" append graphs {e['append_graph']}, syncs solve {e['syncs_solve']}"
            f" append {e['syncs_append']}), fit {e['fit_ms_main_thread']:.2f} ms on the main"
            f" thread ({e['main_threads']} threads), {e['fit_ms_worker_one_thread']:.2f} ms in"
            f" the worker, Gram of 8 rows {e['gram8_plain_ms']:.3f} ms plain /"
            f" {e['gram8_row_gram_ms']:.3f} ms row_gram,"
            f" history {e['history_bytes'] / 2**20:.1f} MiB = 2 T0 d floats"
            f" {e['two_T0_d_floats_bytes'] / 2**20:.1f} MiB (all buffers"
            f" {e['all_estimator_buffers_bytes'] / 2**20:.1f} MiB)"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="optex-gpu.json")
    ap.add_argument("--small", action="store_true", help="CPU-sized smoke test")
    ap.add_argument("--profile", default=None, help="folder for profiler tables and traces")
    args = ap.parse_args()
    started = time.time()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)
    ensure_registry()
    dims = (2_000, 10_000) if args.small else (100_000, 1_000_000)
    reps = 5 if args.small else 50
    warm, rounds, block = (3, 2, 3) if args.small else (8, 6, 6)
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "N": N,
        "T0": T0,
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    # 1. bandwidth: device-to-device copy (read + write)
    bw = copy_bandwidth(2**22 if args.small else 2**28, device)
    result["copy_bandwidth_GBps"] = bw / 1e9
    # 2. the estimator, T0 = 50, fp32
    result["estimator"] = {str(d): estimator_bench(d, device, bw, reps) for d in dims}
    # 3. objectives
    reg = get_registry()
    objectives: dict[str, tuple[Objective, float]] = {}
    for d in dims:
        rosen = reg.create("objective", {"name": "rosenbrock", "dim": d})
        rosen.prepare(device, torch.float32)
        objectives[f"rosenbrock_d{d}"] = (rosen, 0.01)
    mlp = MLPObjective(width=64 if args.small else 1024)
    mlp.prepare(device, torch.float32)
    objectives["mlp"] = (mlp, 1e-3)
    result["mlp_params"] = sum(v.numel() for v in mlp.init_params(torch.Generator()).values())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result["iteration_ms"] = {
        name: iteration_cost(obj, lr, device, warm, rounds, block)
        for name, (obj, lr) in objectives.items()
    }
    result["phase_ms"] = {
        name: phase_times(obj, lr, device) for name, (obj, lr) in objectives.items()
    }
    # 4. wall-clock to vanilla's 40-iteration loss, side by side
    result["to_target"] = {
        name: to_target(obj, lr, device, 40) for name, (obj, lr) in objectives.items()
    }
    if device.type == "cuda":
        result["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
    if args.profile:
        for name, (obj, lr) in objectives.items():
            profile(obj, lr, name, device, args.profile)
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    result["wall_s"] = time.time() - started
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)
    print(summary(result))


if __name__ == "__main__":
    main()
