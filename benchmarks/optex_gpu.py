"""OptEx on one GPU: estimator vs the bandwidth bound, iteration cost, wall-clock to target.

    PYTHONPATH=$PWD:$PWD/plugins python benchmarks/optex_gpu.py --out optex-gpu.json

(needs the package's entry points: ``pip install --no-deps --no-build-isolation -e .`` first).
Writes one JSON file; ``benchmarks/optex_synthetic.py --gpu-json FILE`` puts it in the report.
``--small`` runs the same code at a CPU-friendly size (smoke test only).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from optkit_optex.estimator import KernelGradientEstimator

from optkit.interfaces import Objective, Params
from optkit.oracle import Oracle
from optkit.registry import get_registry


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, reps: int, warm: int = 3) -> float:
    """Median seconds of ``fn`` over ``reps`` synchronized calls after ``warm`` calls."""
    for _ in range(warm):
        fn()
    out = []
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t)
    return statistics.median(out)


class MLPObjective(Objective):
    """A timing workload only: a 3-layer MLP (tanh) on a fixed random teacher-labelled data set
    held on the device; minibatches of 128 drawn with the cell's generator."""

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
        return torch.randint(0, self.n, (128,), generator=generator).to(self.device)

    def loss(self, params: Params, batch: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.x[batch] @ params["w1"] + params["b1"])
        h = torch.tanh(h @ params["w2"] + params["b2"])
        logits = h @ params["w3"] + params["b3"]
        return torch.nn.functional.cross_entropy(logits, self.y[batch])

    @torch.no_grad()
    def evaluate(self, params: Params) -> dict[str, float]:
        return {"loss": float(self.loss(params, torch.arange(self.n, device=self.device)))}


def make(obj: Objective, spec: dict[str, Any], device: torch.device, seed: int = 0):  # type: ignore[no-untyped-def]
    reg = get_registry()
    opt = reg.create("optimizer", spec)
    gen = torch.Generator().manual_seed(seed)
    params = obj.init_params(gen)
    state = opt.init(params)
    oracle = Oracle(obj, reg.create("executor", {"name": "vmap"}), gen)
    return opt, params, state, oracle


def iteration_cost(
    obj: Objective, specs: dict[str, dict[str, Any]], device: torch.device, warm: int, reps: int
) -> dict[str, float]:
    """Median ms per iteration of each optimizer (synchronized), after ``warm`` iterations."""
    out = {}
    for label, spec in specs.items():
        opt, params, state, oracle = make(obj, spec, device)
        holder = {"p": params, "s": state}

        def one() -> None:
            holder["p"], holder["s"], _ = opt.step(holder["p"], holder["s"], oracle)  # noqa: B023

        for _ in range(warm):
            one()
        out[label] = 1e3 * timed(one, device, reps, warm=0)
    return out


def to_target(
    obj: Objective, specs: dict[str, dict[str, Any]], device: torch.device, vanilla_iters: int
) -> dict[str, dict[str, float]]:
    """Wall-clock (optimizer steps only, synchronized; the loss checks between steps are not
    counted) and iterations to reach vanilla's ``vanilla_iters``-iteration loss."""
    goal = None
    out: dict[str, dict[str, float]] = {}
    for label, spec in specs.items():
        opt, params, state, oracle = make(obj, spec, device)
        wall, iters = 0.0, 0
        while iters < vanilla_iters:
            sync(device)
            t0 = time.perf_counter()
            params, state, _ = opt.step(params, state, oracle)
            sync(device)
            wall += time.perf_counter() - t0
            iters += 1
            if goal is not None and obj.evaluate(params)["loss"] <= goal:
                break
        loss = obj.evaluate(params)["loss"]
        if goal is None:
            goal = loss
        out[label] = {
            "iterations": iters,
            "wall_s": wall,
            "loss": loss,
            "reached": float(loss <= goal),
        }
    return out


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="optex-gpu.json")
    ap.add_argument("--small", action="store_true")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ensure_registry()
    d = 10_000 if args.small else 1_000_000
    t0_hist, reps = 50, (5 if args.small else 50)
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "d": d,
        "T0": t0_hist,
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    # 1. bandwidth: device-to-device copy of 1 GiB (read + write)
    big = torch.empty(2**28 if not args.small else 2**22, device=device)
    dst = torch.empty_like(big)
    t = timed(lambda: dst.copy_(big), device, 10)
    bw = 2 * big.numel() * 4 / t
    result["copy_bandwidth_GBps"] = bw / 1e9
    # 2. the estimator at d, T0 = 50, fp32
    est = KernelGradientEstimator(d, t0_hist, device=device, dtype=torch.float32)
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(d, device=device, generator=g)
    for it in range(12):
        est.begin(x)
        pts = x + 0.01 * torch.randn(5, d, device=device, generator=g).cumsum(0)
        est.append(pts, 2 * pts, iteration=it)
        x = pts[-1] + 0.01
    est.begin(x)
    q = x + 0.003
    bytes_read = 2 * t0_hist * d * 4
    t_query = timed(lambda: est.query(q), device, reps)
    t_begin = timed(lambda: est.begin(x), device, max(reps // 5, 3))
    pts8 = x + 0.01 * torch.randn(8, d, device=device, generator=g).cumsum(0)
    t_append = timed(lambda: est.append(pts8, 2 * pts8, iteration=99), device, max(reps // 5, 3))
    xv_plain = timed(lambda: torch.mv(est.X, q), device, reps)
    gw = timed(lambda: torch.mv(est.G.T, est.a), device, reps)
    est.begin(x)
    graph_ms = None
    if device.type == "cuda":
        try:
            static_q = q.clone()
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(3):
                    est.query(static_q)
            torch.cuda.current_stream().wait_stream(s)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = est.query(static_q)
            graph.replay()
            sync(device)
            torch.testing.assert_close(static_out, est.query(static_q))
            graph_ms = 1e3 * timed(graph.replay, device, reps)
        except Exception as err:  # report, do not hide
            result["graph_error"] = repr(err)
    result["estimator"] = {
        "query_ms": 1e3 * t_query,
        "query_graph_ms": graph_ms,
        "bound_ms": 1e3 * bytes_read / bw,
        "ratio_to_bound": t_query / (bytes_read / bw),
        "ratio_to_bound_graph": None if graph_ms is None else graph_ms / (1e3 * bytes_read / bw),
        "X_v_mv_ms": 1e3 * xv_plain,
        "Gt_w_mv_ms": 1e3 * gw,
        "begin_ms": 1e3 * t_begin,
        "append8_ms": 1e3 * t_append,
        "history_bytes": est.memory_bytes,
        "two_T0_d_floats_bytes": 2 * t0_hist * d * 4,
    }
    # 3. iteration cost, N = 8, vmap executor
    reg = get_registry()
    n = 8

    def specs(lr: float) -> dict[str, dict[str, Any]]:
        base = {"base": "adam", "base_config": {"lr": lr}, "parallelism": n}
        return {
            "vanilla": {"name": "adam", "lr": lr},
            "optex": {"name": "optex", **base},
            "optex_refit10": {"name": "optex", "refit_every": 10, **base},
            "data_parallel": {"name": "data_parallel", **base},
            "target": {"name": "target", **base},
        }

    rosen = reg.create("objective", {"name": "rosenbrock", "dim": d})
    rosen.prepare(device, torch.float32)
    mlp = MLPObjective(width=256 if args.small else 1024)
    mlp.prepare(device, torch.float32)
    result["mlp_params"] = sum(v.numel() for v in mlp.init_params(torch.Generator()).values())
    warm, it_reps = (3, 5) if args.small else (8, 30)
    torch.cuda.reset_peak_memory_stats() if device.type == "cuda" else None
    result["iteration_ms"] = {
        f"rosenbrock_d{d}": iteration_cost(rosen, specs(0.01), device, warm, it_reps),
        "mlp": iteration_cost(mlp, specs(1e-3), device, warm, it_reps),
    }
    # 4. wall-clock to vanilla's 40-iteration loss, side by side
    result["to_target"] = {
        f"rosenbrock_d{d}": to_target(rosen, specs(0.01), device, 40),
        "mlp": to_target(mlp, specs(1e-3), device, 40),
    }
    if device.type == "cuda":
        result["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
