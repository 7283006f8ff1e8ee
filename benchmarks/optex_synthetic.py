"""OptEx on the synthetic functions (CPU): sequential iterations to vanilla's loss, noisy
gradients, time per iteration; writes ``docs/benchmarks/optex-synthetic.md``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/optex_synthetic.py

The GPU section is read from ``docs/benchmarks/optex-gpu.json`` (written on the H200 by
``benchmarks/optex_gpu.py``). ``--quick`` runs 2 seeds (a smoke test).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import torch
from optkit_optex.estimator import KernelGradientEstimator

import optkit
from optkit.oracle import Oracle

ROOT = Path(__file__).resolve().parents[1]
REG = optkit.get_registry()


def trajectory(
    fn: str, spec: dict[str, Any], iters: int, seed: int, d: int, noise: float = 0.0
) -> list[float]:
    """Noise-free loss after each of ``iters`` iterations (index 0: the start)."""
    obj = REG.create("objective", {"name": fn, "dim": d, "noise": noise})
    obj.prepare(torch.device("cpu"), torch.float32)
    opt = REG.create("optimizer", spec)
    gen = torch.Generator().manual_seed(seed)
    params = obj.init_params(gen)
    state = opt.init(params)
    oracle = Oracle(obj, REG.create("executor", {"name": "vmap"}), gen)
    out = [obj.evaluate(params)["loss"]]
    for _ in range(iters):
        params, state, _ = opt.step(params, state, oracle)
        out.append(obj.evaluate(params)["loss"])
    return out


def first_hit(losses: list[float], goal: float) -> int | None:
    return next((i for i, v in enumerate(losses) if v <= goal), None)


def wrap(name: str, n: int, lr: float = 0.01, **extra: Any) -> dict[str, Any]:
    return {"name": name, "base": "adam", "base_config": {"lr": lr}, "parallelism": n, **extra}


def fmt_hits(hits: list[int | None]) -> str:
    if any(h is None for h in hits):
        got = [h for h in hits if h is not None]
        return f">40 in {len(hits) - len(got)}/{len(hits)} seeds" + (
            f" (others {min(got)}-{max(got)})" if got else ""
        )
    ints = [h for h in hits if h is not None]
    med = statistics.median(ints)
    return f"{med:g} ({min(ints)}-{max(ints)})"


def study_exact(
    seeds: list[int],
    d: int,
    variants: tuple[str, ...] = ("optex", "target", "data_parallel", "mll"),
) -> tuple[list[str], dict[str, Any]]:
    rows = [
        "| function | N | OptEx (heuristic fit) | OptEx (GPyTorch MLL fit) | Target |"
        " data_parallel | released OptEx / Target |",
        "|---|---|---|---|---|---|---|",
    ]
    raw: dict[str, Any] = {}
    released = {2: "22 / 20", 5: "11 / 8", 10: "7 / 4"}
    for fn in ("sphere", "rosenbrock"):
        goals = {s: trajectory(fn, {"name": "adam", "lr": 0.01}, 40, s, d)[-1] for s in seeds}
        for n in (2, 5, 10):
            cells: dict[str, list[int | None]] = {}
            specs = {
                "optex": wrap("optex", n),
                "target": wrap("target", n),
                "data_parallel": wrap("data_parallel", n),
            }
            if n == 5:
                specs["mll"] = wrap("optex", n, fit="mll", refit_every=5, mll_steps=30)
            for label, spec in specs.items():
                if label in variants:
                    hits = [first_hit(trajectory(fn, spec, 40, s, d), goals[s]) for s in seeds]
                    cells[label] = hits
            raw[f"{fn}-N{n}"] = cells
            shown = {k: fmt_hits(cells[k]) if k in cells else "-" for k in specs}
            rows.append(
                f"| {fn} | {n} | {shown['optex']} | {shown.get('mll', '-')} | {shown['target']} |"
                f" {shown['data_parallel']} | {released[n]} |"
            )
    return rows, raw


def study_noisy(seeds: list[int], d: int) -> tuple[list[str], dict[str, Any]]:
    rows = [
        "| function | noise std | vanilla loss @40 | OptEx heuristic: iters / loss @40 |"
        " OptEx fixed l=0.1, noise=1e-3: iters / loss @40 | data_parallel: iters / loss @40 |"
        " Target: iters / loss @40 |",
        "|---|---|---|---|---|---|---|",
    ]
    raw: dict[str, Any] = {}
    for fn, noise in (
        ("sphere", 10.0),
        ("sphere", 100.0),
        ("rosenbrock", 1e3),
        ("rosenbrock", 1e4),
    ):
        vanilla = {s: trajectory(fn, {"name": "adam", "lr": 0.01}, 40, s, d, noise) for s in seeds}
        cells: dict[str, Any] = {}
        for label, spec in {
            "optex": wrap("optex", 5),
            "fixed": wrap("optex", 5, fit="fixed", lengthscale=0.1, noise=1e-3),
            "data_parallel": wrap("data_parallel", 5),
            "target": wrap("target", 5),
        }.items():
            runs = {s: trajectory(fn, spec, 40, s, d, noise) for s in seeds}
            cells[label] = {
                "hits": [first_hit(runs[s], vanilla[s][-1]) for s in seeds],
                "final": statistics.median(runs[s][-1] for s in seeds),
            }
        raw[f"{fn}-noise{noise:g}"] = cells
        v40 = statistics.median(vanilla[s][-1] for s in seeds)
        rows.append(
            f"| {fn} | {noise:g} | {v40:.4g} | "
            + " | ".join(
                f"{fmt_hits(cells[k]['hits'])} / {cells[k]['final']:.4g}"
                for k in ("optex", "fixed", "data_parallel", "target")
            )
            + " |"
        )
    return rows, raw


def timing(d: int, n: int, warm: int = 3, reps: int = 10) -> tuple[list[str], dict[str, Any]]:
    obj = REG.create("objective", {"name": "rosenbrock", "dim": d})
    obj.prepare(torch.device("cpu"), torch.float32)
    specs = {
        "vanilla (adam)": {"name": "adam", "lr": 0.01},
        "optex": wrap("optex", n),
        "optex refit_every=10": wrap("optex", n, refit_every=10),
        "data_parallel": wrap("data_parallel", n),
        "target": wrap("target", n),
    }
    ms: dict[str, float] = {}
    for label, spec in specs.items():
        opt = REG.create("optimizer", spec)
        gen = torch.Generator().manual_seed(0)
        params = obj.init_params(gen)
        state = opt.init(params)
        oracle = Oracle(obj, REG.create("executor", {"name": "vmap"}), gen)
        times = []
        for i in range(warm + reps):
            t = time.perf_counter()
            params, state, _ = opt.step(params, state, oracle)
            if i >= warm:
                times.append(time.perf_counter() - t)
        ms[label] = 1e3 * statistics.median(times)
    van = ms["vanilla (adam)"]
    rows = ["| optimizer | ms / iteration | x vanilla |", "|---|---|---|"]
    rows += [f"| {k} | {v:.2f} | {v / van:.1f} |" for k, v in ms.items()]
    # estimator breakdown
    est = KernelGradientEstimator(d, 50)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(d, generator=g)
    for it in range(12):
        est.begin(x)
        pts = x + 0.01 * torch.randn(n, d, generator=g).cumsum(0)
        est.append(pts, 2 * pts, iteration=it)
        x = pts[-1] + 0.01

    def med(fn: Any, k: int = 10) -> float:
        out = []
        for _ in range(k):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
        return 1e3 * statistics.median(out)

    parts = {
        "begin (fit + solve)": med(lambda: est.begin(x)),
        "query (one mu(x))": med(lambda: est.query(x + 0.003)),
        f"append ({n} pairs never queried: worst case)": med(
            lambda: est.append(pts, 2 * pts, iteration=0)
        ),
    }
    rows += ["", f"| estimator step (d = {d}, T0 = 50) | ms |", "|---|---|"]
    rows += [f"| {k} | {v:.2f} |" for k, v in parts.items()]
    mem = est.memory_bytes
    rows += [
        "",
        f"History memory: {mem / 2**20:.1f} MiB = 2 * T0 * d * 4 bytes"
        f" = {2 * 50 * d * 4 / 2**20:.1f} MiB (T0 = 50, d = {d}, float32).",
    ]
    return rows, {"ms": ms, "estimator_ms": parts, "history_bytes": mem}


ITERATION_COLUMNS: dict[str, str] = {
    "vanilla": "vanilla (framework `adam`)",
    "raw_adam": "plain torch.optim.Adam loop",
    "optex": "optex (defaults)",
    "optex_host_solve": "optex, `device_solve = false`",
    "optex_eager": "optex, `cuda_graph = false`",
    "optex_generic": "optex, `fused = false`",
    "optex_lag0": "optex, `fit_lag = 0`",
    "optex_lag1": "optex, `fit_lag = 1`",
    "optex_device_solve": "optex, `device_solve = true`",
    "optex_refit10": "optex, `refit_every = 10`",
    "data_parallel": "data_parallel",
    "target": "target",
}


def gpu_section() -> list[str]:
    """The GPU section from ``docs/benchmarks/optex-gpu.json`` (``benchmarks/optex_gpu.py``),
    with the per-iteration times of ``optex-gpu-before.json`` (last session) for comparison."""
    path = ROOT / "docs" / "benchmarks" / "optex-gpu.json"
    if not path.exists():
        return ["(no GPU results: run benchmarks/optex_gpu.py on the GPU machine)"]
    r = json.loads(path.read_text())
    lines = [
        f"Device: {r['device']}, torch {r['torch']}, run {r['started']}; N = {r['N']},"
        f" T0 = {r['T0']}, float32, vmap executor. Measured device-to-device copy bandwidth:"
        f" {r['copy_bandwidth_GBps']:.0f} GB/s. Raw numbers: `docs/benchmarks/optex-gpu.json`.",
        "",
        "### Estimator",
        "",
        "| d | bound: read X and G once | query, eager | query, CUDA graph | begin"
        " | begin, `fit_lag = 0` | append 8 pairs | history vs 2 T0 d floats |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for d, e in r["estimator"].items():
        graph = (
            f"{e['query_graph_ms']:.3f} ms ({e['ratio_to_bound_graph']:.2f}x)"
            if e.get("query_graph_ms") is not None
            else "-"
        )
        lag0 = e.get("begin_fit_lag0_ms")
        lines.append(
            f"| {int(d):,} | {e['bound_ms']:.3f} ms | {e['query_ms']:.3f} ms"
            f" ({e['ratio_to_bound']:.2f}x) | {graph} | {e['begin_ms']:.2f} ms |"
            f" {'-' if lag0 is None else f'{lag0:.2f} ms'} |"
            f" {e['append8_never_queried_ms']:.2f} ms |"
            f" {e['history_bytes'] / 2**20:.1f} MiB ="
            f" {e['two_T0_d_floats_bytes'] / 2**20:.1f} MiB |"
        )
    lines += [
        "",
        f"Peak GPU memory of the whole run: {r['peak_memory_bytes'] / 2**30:.2f} GiB.",
        "",
        "### Time per iteration",
        "",
        "Ms per iteration and the ratio to vanilla, the variants interleaved (rounds over all"
        " variants, so that drifts of the machine hit each alike). *Steady state*: blocks of"
        " iterations back to back, one synchronisation per block (how a training loop runs);"
        " *each synchronized*: every iteration timed on its own. MLP ="
        f" {r['mlp_params']:,}-parameter benchmark-only MLP, batch 128. `syncs` = host"
        " synchronisations per OptEx iteration (counted with `torch.cuda.set_sync_debug_mode`).",
        "",
    ]
    first = next(iter(r["iteration_ms"].values()))
    cols = [k for k in ITERATION_COLUMNS if k in first]
    lines += [
        "| objective | timing | " + " | ".join(ITERATION_COLUMNS[c] for c in cols) + " | syncs |",
        "|---|---|" + "---|" * (len(cols) + 1),
    ]
    for obj, row in r["iteration_ms"].items():
        for suffix, what in (("", "steady state"), ("_synced", "each synchronized")):
            if f"vanilla{suffix}" not in row:
                continue
            van = row[f"vanilla{suffix}"]
            cells = [
                f"{row[c + suffix]:.2f} ({row[c + suffix] / van:.2f}x)"
                if c + suffix in row
                else "-"
                for c in cols
            ]
            lines.append(
                f"| {obj} | {what} | "
                + " | ".join(cells)
                + f" | {row.get('optex_syncs_per_iteration', '-')} |"
            )
    if "phase_ms" in r:
        lines += [
            "",
            "Host milliseconds per iteration by phase (no profiler: `perf_counter` around the"
            " methods, asynchronous work counts its launch only; the oracle's phase includes"
            " its wait for the device; `other` = the rest of the synchronized iteration):",
            "",
        ]
        phases = list(next(iter(next(iter(r["phase_ms"].values())).values())))
        lines += [
            "| objective | variant | " + " | ".join(phases) + " |",
            "|---|---|" + "---|" * len(phases),
        ]
        for obj, variants in r["phase_ms"].items():
            for label, prow in variants.items():
                lines.append(
                    f"| {obj} | {label} | "
                    + " | ".join(f"{prow.get(p, 0.0):.3f}" for p in phases)
                    + " |"
                )
    before = path.with_name("optex-gpu-before.json")
    if before.exists():
        b = json.loads(before.read_text())
        lines += [
            "",
            f"Before this speed work (`optex-gpu-before.json`, {b['started']}, another machine of"
            " the same kind), ms per iteration: "
            + "; ".join(
                f"{obj}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items())
                for obj, row in b["iteration_ms"].items()
            )
            + ".",
        ]
    lines += [
        "",
        "### Wall-clock to vanilla's 40-iteration loss",
        "",
        "Optimizer steps only; iterations in brackets.",
        "",
    ]
    first_t = next(iter(r["to_target"].values()))
    cols_t = [k for k in ITERATION_COLUMNS if k in first_t]
    lines += [
        "| objective | " + " | ".join(ITERATION_COLUMNS[c] for c in cols_t) + " |",
        "|---|" + "---|" * len(cols_t),
    ]
    for obj, row in r["to_target"].items():
        cells = [
            f"{row[c]['wall_ms']:.0f} ms ({row[c]['iterations']}"
            f"{'' if row[c]['reached'] else ', not reached'})"
            for c in cols_t
        ]
        lines.append(f"| {obj} | " + " | ".join(cells) + " |")
    return lines


def replace_gpu_section(md: Path) -> None:
    """Rewrite only the ``## GPU`` section of an existing report (after a new GPU run)."""
    text = md.read_text()
    head = text[: text.index("## GPU (NVIDIA H200)")]
    md.write_text(head + "\n".join(gpu_header() + gpu_section()) + "\n")


def gpu_header() -> list[str]:
    return [
        "## GPU (NVIDIA H200)",
        "",
        "Command (on the device machine, from the checkout):",
        "",
        "    python3 -m pip install --no-deps --no-build-isolation -e . -q",
        "    PYTHONPATH=$PWD:$PWD/plugins python3 benchmarks/optex_gpu.py"
        " --out $OUT/optex-gpu.json",
        "",
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "optex-synthetic.md"))
    ap.add_argument(
        "--counts",
        action="store_true",
        help="only the exact-gradient iteration counts (OptEx heuristic fit), printed, no file",
    )
    ap.add_argument(
        "--gpu-only",
        action="store_true",
        help="rewrite only the GPU section of --out from docs/benchmarks/optex-gpu.json",
    )
    args = ap.parse_args()
    if args.gpu_only:
        replace_gpu_section(Path(args.out))
        return
    torch.set_num_threads(1)
    seeds = [0, 1] if args.quick else [0, 1, 2, 3, 4]
    if args.counts:
        print("\n".join(study_exact(seeds, 1000, variants=("optex",))[0]))
        return
    start = time.time()
    exact_rows, exact_raw = study_exact(seeds, 1000)
    noisy_rows, noisy_raw = study_noisy(seeds, 1000)
    time_rows, time_raw = timing(100_000, 5)
    cpu = (
        subprocess.run(
            ["sh", "-c", "lscpu | grep 'Model name' | cut -d: -f2"], capture_output=True, text=True
        ).stdout.strip()
        or platform.processor()
    )
    rev = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    raw = {"exact": exact_raw, "noisy": noisy_raw, "timing": time_raw, "seeds": seeds}
    (Path(args.out).with_suffix(".json")).write_text(json.dumps(raw, indent=1))
    lines = [
        "# OptEx on synthetic functions",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} (git {rev}, plus the"
        " working tree), CPU: "
        f"{cpu}, 1 torch thread, torch {torch.__version__}; {len(seeds)} seeds; took"
        f" {time.time() - start:.0f} s. Command:",
        "",
        "    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/optex_synthetic.py",
        "",
        "Raw numbers: `optex-synthetic.json` beside this file. The CPU machine is shared with"
        " other jobs, so its timings are noisy; the ratios are what count.",
        "",
        "## Sequential iterations to reach vanilla Adam's 40-iteration loss",
        "",
        "d = 1000, Adam lr 0.01, exact gradients, default OptEx options (T0 = 50, Matern 5/2,"
        ' `fit = "heuristic"`, `next_iterate = "last"`). Median over seeds (range). The'
        " released JAX reference's counts (from the design notes) are in the last column. One"
        " OptEx or Target iteration is one sequential step with N gradient evaluations.",
        "",
        *exact_rows,
        "",
        "## Noisy gradients",
        "",
        "d = 1000, N = 5, the objective's `noise` option (isotropic Gaussian gradient noise of"
        " that standard deviation per coordinate). Iterations to reach vanilla's 40-iteration"
        " (noise-free) loss, and the median loss after 40 iterations. The fixed column uses"
        " constant hyperparameters in the spirit of the released defaults (lengthscale 0.1,"
        " relative noise 1e-3, no fitting; the released code also rescales inputs, which we"
        " do not reproduce).",
        "",
        *noisy_rows,
        "",
        "## CPU time per iteration (Rosenbrock, d = 100,000, N = 5, vmap executor)",
        "",
        "Median of 10 iterations after 3 warm-up. The released reference's OptEx iteration"
        " cost 115-156 times a vanilla Adam iteration at this size (design notes).",
        "",
        *time_rows,
        "",
        *gpu_header(),
        *gpu_section(),
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
