"""Multi-GPU OptEx (issue 8): OptEx's N gradient evaluations on N GPUs through the ``ray``
executor, against Vanilla on one GPU and data_parallel on the same GPUs.

For each task (``cifar10`` CNN: test error; ``shakespeare`` character LM: training loss) and
seed, the runs are (``G`` = GPUs used):

=========================  =========  =====================================================
run                        G          how
=========================  =========  =====================================================
vanilla                    1          Adam, ``serial`` executor, driver on cuda:0
optex-N4-vmap              1          OptEx N=4, ``vmap`` executor on cuda:0
optex-N4-ray-g1            1          OptEx N=4, ray, 4 actors x 0.25 GPU (one GPU shared)
optex-N4-ray-g2            2          OptEx N=4, ray, 4 actors x 0.5 GPU
optex-N2-ray-g2            2          OptEx N=2, ray, 2 actors x 1 GPU
optex-N4-ray-g4            4          OptEx N=4, ray, 4 actors x 1 GPU
dp-N2-ray-g2 / dp-N4-ray-g4  2 / 4    data_parallel N=2 / 4 (the same N workers, N batches)
=========================  =========  =====================================================

Each run records per iteration: wall seconds (evaluation excluded; the ray actors' start-up,
``startup_s``, is outside the clock, the first iteration's warm-up inside it), and every
``--eval-every`` iterations the objective's metrics; from the ray executor its bytes moved per
iteration and its fault events; and GPU utilization sampled by ``nvidia-smi`` every 200 ms.
The summary gives time per iteration, wall-clock to reach Vanilla's final metric, mean GPU
utilization of the GPUs used, bytes per iteration, and the 1 -> 2 -> 4 GPU scaling of OptEx N=4.

On the 4-GPU machine (see docs/benchmarks/multigpu.md for staging Ray and the data)::

    NCCL_NVLS_ENABLE=0 python benchmarks/multigpu_optex.py --tasks cifar10 shakespeare \\
        --seeds 0 1 2 --iterations 300 --out runs/multigpu

On a CPU (a smoke run of the same code paths, CPU actors, tiny sizes)::

    python benchmarks/multigpu_optex.py --smoke --out runs/multigpu-smoke
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast off (device notes)

TASKS: dict[str, dict[str, Any]] = {
    "cifar10": {
        "objective": {"name": "cifar10", "model": "cnn", "batch_size": 64},
        "metric": "test_error",
        "lr": 1e-3,
    },
    "shakespeare": {
        "objective": {"name": "shakespeare", "batch_size": 32},
        "metric": "train_loss",
        "lr": 3e-3,
    },
}
SMOKE_OBJECTIVE = {
    "cifar10": {"train_size": 512, "eval_train_size": 256, "eval_batch_size": 256},
    "shakespeare": {"train_chars": 20000, "eval_windows": 8},
}


def runs(gpus: int, smoke: bool) -> list[dict[str, Any]]:
    """The run matrix for a machine with ``gpus`` GPUs (0: CPU actors)."""

    def ray(actors: int, per: float) -> dict[str, Any]:
        if gpus == 0:  # CPU smoke run: fractional CPUs instead of GPUs
            return {
                "name": "ray",
                "num_actors": actors,
                "num_gpus_per_actor": 0.0,
                "num_cpus_per_actor": 0.5,
            }
        return {
            "name": "ray",
            "num_actors": actors,
            "num_gpus_per_actor": per,
            "num_cpus_per_actor": 1.0,
        }

    table = [
        ("vanilla", 1, 1, "adam", {"name": "serial"}),
        ("optex-N4-vmap", 4, 1, "optex", {"name": "vmap"}),
        ("optex-N4-ray-g1", 4, 1, "optex", ray(4, 0.25)),
        ("optex-N4-ray-g2", 4, 2, "optex", ray(4, 0.5)),
        ("optex-N2-ray-g2", 2, 2, "optex", ray(2, 1.0)),
        ("dp-N2-ray-g2", 2, 2, "data_parallel", ray(2, 1.0)),
        ("optex-N4-ray-g4", 4, 4, "optex", ray(4, 1.0)),
        ("dp-N4-ray-g4", 4, 4, "data_parallel", ray(4, 1.0)),
    ]
    out = []
    for label, n, g, method, executor in table:
        if gpus and g > gpus:
            continue
        if smoke and label not in (
            "vanilla",
            "optex-N4-vmap",
            "optex-N4-ray-g1",
            "optex-N2-ray-g2",
            "dp-N2-ray-g2",
        ):
            continue
        out.append(
            {
                "label": label,
                "n": n,
                "gpus": g if gpus else 0,
                "method": method,
                "executor": executor,
            }
        )
    return out


class GpuSampler:
    """``nvidia-smi`` utilization samples (percent per GPU) in a background thread."""

    def __init__(self, period_ms: int = 200) -> None:
        self.samples: list[list[float]] = []
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None
        if shutil.which("nvidia-smi") is None:
            return
        self._proc = subprocess.Popen(
            [
                "nvidia-smi",
                "--query-gpu=utilization.gpu",
                "--format=csv,noheader,nounits",
                f"--loop-ms={period_ms}",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        current: list[float] = []
        n = torch.cuda.device_count() if torch.cuda.is_available() else 1
        for line in self._proc.stdout:
            try:
                current.append(float(line.strip()))
            except ValueError:
                continue
            if len(current) == n:
                self.samples.append(current)
                current = []

    def mark(self) -> int:
        return len(self.samples)

    def mean(self, start: int, gpus: int) -> float | None:
        rows = self.samples[start:]
        if not rows or gpus == 0:
            return None
        return statistics.fmean(statistics.fmean(r[:gpus]) for r in rows)

    def close(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)


class ExecutorCache:
    """Keeps the last executor for the next run with the same config: consecutive seeds of
    one run reuse the running Ray actors (they load the new objective instead of restarting)."""

    def __init__(self) -> None:
        self.key = ""
        self.executor: Any = None

    def get(self, config: dict[str, Any]) -> Any:
        import optkit

        key = json.dumps(config, sort_keys=True)
        if key != self.key:
            self.close()
            self.executor = optkit.get_registry().create("executor", config)
            self.key = key
        return self.executor

    def close(self) -> None:
        if self.executor is not None:
            self.executor.close()
        self.executor, self.key = None, ""


def run_one(
    task: str,
    run: dict[str, Any],
    seed: int,
    args: argparse.Namespace,
    device: torch.device,
    sampler: GpuSampler,
    cache: ExecutorCache,
) -> dict[str, Any]:
    import optkit
    from optkit.oracle import Oracle

    reg = optkit.get_registry()
    spec = dict(TASKS[task]["objective"])
    if args.smoke:
        spec.update(SMOKE_OBJECTIVE[task])
    obj = reg.create("objective", spec)
    obj.optkit_spec = dict(spec)  # ray actors rebuild the objective from its spec
    obj.prepare(device, torch.float32)
    base = {"base": "adam", "base_config": {"lr": TASKS[task]["lr"]}}
    if run["method"] == "adam":
        opt = reg.create("optimizer", {"name": "adam", "lr": TASKS[task]["lr"]})
    else:
        opt = reg.create("optimizer", {"name": run["method"], **base, "parallelism": run["n"]})
    executor = cache.get(run["executor"])
    stats = getattr(executor, "stats", None)
    stats_before = stats.as_dict() if stats else {}
    events_before = len(getattr(executor, "events", []))
    start = time.perf_counter()
    executor.bind(obj)  # ray: start the actors and prepare their objectives, outside the clock
    startup_s = time.perf_counter() - start
    gen = torch.Generator().manual_seed(seed)
    params = obj.init_params(gen)
    state = opt.init(params)
    oracle = Oracle(obj, executor, gen)
    metric = TASKS[task]["metric"]
    trace = [{"iteration": 0, "wall_s": 0.0, **obj.evaluate(params)}]
    step_s: list[float] = []
    mark = sampler.mark()
    wall = 0.0
    for it in range(1, args.iterations + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        params, state, _ = opt.step(params, state, oracle)
        if device.type == "cuda":
            torch.cuda.synchronize()
        step_s.append(time.perf_counter() - start)
        wall += step_s[-1]
        if it % args.eval_every == 0 or it == args.iterations:
            trace.append(
                {
                    "iteration": it,
                    "wall_s": wall,
                    "grad_evals": oracle.grad_evals,
                    **obj.evaluate(params),
                }
            )
    delta = {k: v - stats_before[k] for k, v in stats.as_dict().items()} if stats else None
    result = {
        "task": task,
        "seed": seed,
        **{k: run[k] for k in ("label", "n", "gpus", "method")},
        "executor": run["executor"],
        "metric": metric,
        "s_per_iteration": statistics.median(step_s[1:] or step_s),
        "startup_s": startup_s,
        "first_iteration_s": step_s[0],
        "trace": trace,
        "gpu_util_mean": sampler.mean(mark, run["gpus"]),
        "bytes_per_iteration": (delta["bytes_out"] + delta["bytes_in"]) / args.iterations
        if delta
        else 0.0,
        "executor_stats": delta,
        "events": list(getattr(executor, "events", []))[events_before:],
    }
    print(
        f"{task} seed={seed} {run['label']}: {result['s_per_iteration'] * 1e3:.1f} ms/it,"
        f" final {metric}={trace[-1][metric]:.4f}, util={result['gpu_util_mean']},"
        f" MB/it={result['bytes_per_iteration'] / 1e6:.1f}",
        flush=True,
    )
    return result


def time_to(trace: list[dict[str, Any]], metric: str, target: float) -> float | None:
    for row in trace:
        if row[metric] <= target:
            return float(row["wall_s"])
    return None


def summarize(results: list[dict[str, Any]]) -> str:
    lines = [
        "| task | run | GPUs | N | s / iteration | final metric | wall-clock to vanilla's"
        " final (s) | GPU util % | MB moved / iteration | fault events |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task in dict.fromkeys(r["task"] for r in results):
        rows = [r for r in results if r["task"] == task]
        metric = rows[0]["metric"]
        vanilla = {r["seed"]: r["trace"][-1][metric] for r in rows if r["label"] == "vanilla"}
        for label in dict.fromkeys(r["label"] for r in rows):
            group = [r for r in rows if r["label"] == label]
            reach = [
                time_to(r["trace"], metric, vanilla[r["seed"]])
                for r in group
                if r["seed"] in vanilla
            ]
            got = [x for x in reach if x is not None]
            utils = [r["gpu_util_mean"] for r in group if r["gpu_util_mean"] is not None]
            lines.append(
                f"| {task} ({metric}) | {label} | {group[0]['gpus']} | {group[0]['n']} |"
                f" {statistics.fmean(r['s_per_iteration'] for r in group):.4f} |"
                f" {statistics.fmean(r['trace'][-1][metric] for r in group):.4f} |"
                f" {statistics.fmean(got):.1f} ({len(got)}/{len(group)} seeds) |"
                if got
                else f"| {task} ({metric}) | {label} | {group[0]['gpus']} | {group[0]['n']} |"
                f" {statistics.fmean(r['s_per_iteration'] for r in group):.4f} |"
                f" {statistics.fmean(r['trace'][-1][metric] for r in group):.4f} |"
                f" not reached (0/{len(group)}) |"
            )
            lines[-1] += f" {statistics.fmean(utils):.0f} |" if utils else " - |"
            lines[-1] += (
                f" {statistics.fmean(r['bytes_per_iteration'] for r in group) / 1e6:.1f}"
                f" | {sum(len(r['events']) for r in group)} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tasks", nargs="+", default=["cifar10", "shakespeare"], choices=sorted(TASKS)
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--only", nargs="*", default=None, help="run labels to keep")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="CPU, tiny data and 6 iterations: checks the code paths",
    )
    parser.add_argument("--out", default="runs/multigpu")
    args = parser.parse_args()
    if args.smoke:
        args.iterations, args.eval_every, args.seeds = 6, 3, args.seeds[:2]
    torch.set_num_threads(1)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() and not args.smoke else 0
    device = torch.device("cuda:0" if gpus else "cpu")
    import ray

    env = {"NCCL_NVLS_ENABLE": "0", "OMP_NUM_THREADS": "1"}
    if "OPTKIT_CACHE" in os.environ:
        env["OPTKIT_CACHE"] = os.environ["OPTKIT_CACHE"]
    ray.init(
        num_gpus=gpus,
        num_cpus=max(2, os.cpu_count() or 2) if gpus else 2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": env},
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sampler = GpuSampler()
    cache = ExecutorCache()
    results: list[dict[str, Any]] = []
    matrix = [r for r in runs(gpus, args.smoke) if args.only is None or r["label"] in args.only]
    try:
        for task in args.tasks:
            for run in matrix:  # seeds innermost: one actor start-up per run and task
                for seed in args.seeds:
                    results.append(run_one(task, run, seed, args, device, sampler, cache))
                    (out / "results.json").write_text(json.dumps(results, indent=1))
    finally:
        cache.close()
        sampler.close()
    table = summarize(results)
    meta = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(gpus)],
        "torch": torch.__version__,
        "ray": ray.__version__,
        "NCCL_NVLS_ENABLE": os.environ.get("NCCL_NVLS_ENABLE"),
    }
    (out / "summary.md").write_text(json.dumps(meta, indent=1) + "\n\n" + table + "\n")
    print(table)


if __name__ == "__main__":
    main()
