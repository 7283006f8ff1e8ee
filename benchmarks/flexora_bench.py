"""Flexora vs. the LoRA baselines on SmolLM2-135M: every task x seed x method, one JSONL row each.

Runs the task files ``tasks/flexora-<task>.toml`` and ``tasks/flexora-<task>-baselines.toml``
through ``optkit.run`` with the benchmark's scale applied (fewer steps and examples than the
files, so that the whole matrix fits a short GPU lease), seed-major so that a time limit leaves
every task with the same seeds done. ``--table FILE`` renders the markdown table of a JSONL file.

    python benchmarks/flexora_bench.py --out runs/flexora --device cuda --time-limit 330
    python benchmarks/flexora_bench.py --table runs/flexora/flexora_results.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("social_iqa", "winowhy", "strategyqa", "rotten-tomatoes")
METHODS = ("flexora", "random", "lora", "dora", "rslora", "adalora", "lora_drop", "full")


def scaled(path: Path, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    raw = tomllib.loads(path.read_text())
    raw["seeds"] = [seed]
    raw["device"] = args.device
    raw["budget"] = {"iterations": args.steps}
    raw["objective"].update(
        train_size=args.train_size,
        val_size=args.val_size,
        test_size=args.test_size,
        batch_size=args.batch_size,
        eval_batch_size=64,
        attn_implementation=args.attn,
    )
    raw["optimizer"] = {"name": "adamw", "lr": args.lr, "weight_decay": 0.0}
    hyper = raw["hyperoptimizer"]
    hyper["finetune_steps"] = args.steps
    if hyper["name"] == "flexora":
        hyper["search_steps"] = args.search_steps
    else:
        hyper["full_lr"] = args.full_lr
        hyper["drop_steps"] = max(1, args.steps // 5)
        if args.methods:
            hyper["methods"] = [m for m in hyper["methods"] if m in args.methods]
    raw["name"] = f"{raw['name']}-bench-s{seed}"
    return raw


def run_one(task: dict[str, Any], out: Path) -> dict[str, Any]:
    import optkit

    summary = optkit.run(task, out=out)
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    end = next(r for r in rows if r.get("event") == "end")
    if summary.cells_failed:
        error = next((r["error"] for r in rows if r.get("event") == "error"), "failed")
        raise RuntimeError(f"{task['name']}: {error}")
    return end


def flexora_rows(end: dict[str, Any], task: str, seed: int, label: str) -> list[dict[str, Any]]:
    rows = [
        {
            "task": task,
            "seed": seed,
            "method": label,
            "test_accuracy": end["test_accuracy"],
            "layers_trained": end["layers_trained"],
            "trainable_params": end["trainable_params"],
            "search_s": end["search_s"],
            "finetune_s": end["finetune_s"],
            "peak_memory_mb": max(end["peak_memory_mb"], end["search_peak_memory_mb"]),
            "layers": end["selected_layers_str"],
            "hypergradient": end["hypergradient"],
        }
    ]
    if "random_test_accuracy" in end:
        rows.append(
            {
                "task": task,
                "seed": seed,
                "method": "random" if label == "flexora" else f"random({label})",
                "test_accuracy": end["random_test_accuracy"],
                "layers_trained": end["random_layers_trained"],
                "trainable_params": end["random_trainable_params"],
                "search_s": 0.0,
                "finetune_s": end["random_finetune_s"],
                "peak_memory_mb": end["random_peak_memory_mb"],
                "layers": "",
                "hypergradient": "",
            }
        )
    return rows


def baseline_rows(end: dict[str, Any], task: str, seed: int) -> list[dict[str, Any]]:
    rows = []
    for method in METHODS:
        if f"{method}_test_accuracy" not in end:
            continue
        rows.append(
            {
                "task": task,
                "seed": seed,
                "method": method,
                "test_accuracy": end[f"{method}_test_accuracy"],
                "layers_trained": end[f"{method}_layers_trained"],
                "trainable_params": end[f"{method}_trainable_params"],
                "search_s": end[f"{method}_total_s"] - end[f"{method}_finetune_s"]
                if method == "lora_drop"
                else 0.0,
                "finetune_s": end[f"{method}_finetune_s"],
                "peak_memory_mb": end[f"{method}_peak_memory_mb"],
                "layers": end[f"{method}_layers"],
                "hypergradient": "",
            }
        )
    return rows


def table(path: Path) -> str:
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        out += [
            f"\n### {task}\n",
            "| method | test accuracy (mean ± sd) | seeds | layers trained | trainable params |"
            " search s | fine-tune s | peak GPU MB |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for method in dict.fromkeys(r["method"] for r in rows if r["task"] == task):
            rs = [r for r in rows if r["task"] == task and r["method"] == method]
            acc = [r["test_accuracy"] for r in rs]
            sd = statistics.stdev(acc) if len(acc) > 1 else 0.0

            def mean(key: str, rs: list[dict[str, Any]] = rs) -> float:
                return statistics.fmean(float(r[key]) for r in rs)

            out.append(
                f"| {method} | {statistics.fmean(acc):.3f} ± {sd:.3f} | {len(rs)} |"
                f" {mean('layers_trained'):.1f} | {mean('trainable_params'):,.0f} |"
                f" {mean('search_s'):.1f} | {mean('finetune_s'):.1f} |"
                f" {mean('peak_memory_mb'):,.0f} |"
            )
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "flexora-bench")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tasks", nargs="*", default=list(TASKS))
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="*", default=None, help="baselines to run")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--search-steps", type=int, default=10)
    parser.add_argument("--train-size", type=int, default=960)
    parser.add_argument("--val-size", type=int, default=100)
    parser.add_argument("--test-size", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--full-lr", type=float, default=2e-5)
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="also: hypergradient modes and search budgets on the first task",
    )
    parser.add_argument("--time-limit", type=float, default=float("inf"))
    parser.add_argument("--table", type=Path, default=None)
    args = parser.parse_args()
    if args.table is not None:
        print(table(args.table))
        return 0
    import torch

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.set_num_threads(1 if args.device == "cpu" else 8)
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "flexora_results.jsonl"
    start = time.perf_counter()

    def emit(rows: list[dict[str, Any]]) -> None:
        with results.open("a") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)

    def over() -> bool:
        return time.perf_counter() - start > args.time_limit

    for seed in args.seeds:
        for task in args.tasks:
            if over():
                print(f"time limit: stopped before {task} seed {seed}", flush=True)
                break
            flex = run_one(
                scaled(ROOT / "tasks" / f"flexora-{task}.toml", args, seed),
                args.out / f"{task}-flexora-s{seed}",
            )
            emit(flexora_rows(flex, task, seed, "flexora"))
            if over():
                break
            base = run_one(
                scaled(ROOT / "tasks" / f"flexora-{task}-baselines.toml", args, seed),
                args.out / f"{task}-baselines-s{seed}",
            )
            emit(baseline_rows(base, task, seed))
    if args.ablation:
        task = args.tasks[0]
        for mode, steps in (
            ("unrolled", args.search_steps),
            ("finite_difference", args.search_steps),
            ("first_order", 3 * args.search_steps),
        ):
            if over():
                print(f"time limit: ablation {mode}/{steps} not run", flush=True)
                break
            raw = scaled(ROOT / "tasks" / f"flexora-{task}.toml", args, 0)
            raw["hyperoptimizer"].update(
                hypergradient=mode, search_steps=steps, random_control=False
            )
            raw["objective"]["attn_implementation"] = "eager"
            raw["name"] += f"-{mode}-{steps}"
            end = run_one(raw, args.out / f"{task}-ablation-{mode}-{steps}")
            emit(flexora_rows(end, task, 0, f"flexora[{mode},{steps} steps]"))
    print(f"total {time.perf_counter() - start:.1f} s", flush=True)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
