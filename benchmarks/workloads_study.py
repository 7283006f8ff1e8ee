"""The three OptEx workload studies at CPU size: sequential iterations for OptEx, Target and
data_parallel (N = 4) to reach Vanilla Adam's final metric; writes
``docs/benchmarks/optex-workloads-study.json`` and a markdown section.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/workloads_study.py

Smaller than the paper-sized tasks (``tasks/dqn.toml``, ``tasks/cifar10.toml``,
``tasks/shakespeare.toml``), which need the GPU; the objectives, optimizers and runner are the
same. A method "reaches" Vanilla's final value at the first evaluation where its mean over seeds
is at least as good (lower loss / error, higher reward).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from workloads_data import DOC, cpu_name, replace_section

import optkit
from optkit.results import load_rows

ROOT = Path(__file__).resolve().parents[1]
LABELS = ("vanilla", "optex-N4", "target-N4", "data_parallel-N4")


def optimizers(lr: float) -> list[dict[str, Any]]:
    wrap = {"base": "adam", "base_config": {"lr": lr}, "parallelism": 4}
    return [
        {"name": "adam", "lr": lr, "label": "vanilla"},
        {"name": "optex", **wrap, "label": "optex-N4"},
        {"name": "target", **wrap, "label": "target-N4"},
        {"name": "data_parallel", **wrap, "label": "data_parallel-N4"},
    ]


STUDIES: dict[str, dict[str, Any]] = {
    "shakespeare": {
        "metric": "train_loss",
        "task": {
            "objective": {
                "name": "shakespeare",
                "context": 32,
                "width": 32,
                "layers": 1,
                "heads": 2,
                "batch_size": 16,
                "eval_windows": 64,
            },
            "optimizers": optimizers(3e-3),
            "budget": {"iterations": 150, "eval_every": 10},
        },
    },
    "cifar10": {
        "metric": "test_error",
        "task": {
            "objective": {
                "name": "cifar10",
                "model": "cnn",
                "batch_size": 32,
                "eval_train_size": 200,
                "eval_test_size": 1000,
            },
            "optimizers": optimizers(1e-3),
            "budget": {"iterations": 100, "eval_every": 10},
        },
    },
    "dqn": {
        "metric": "reward",
        "task": {
            "objective": {
                "name": "dqn",
                "env": "CartPole-v1",
                "learning_starts": 200,
                "target_update": 100,
                "eps_decay_steps": 1000,
            },
            "optimizers": optimizers(1e-3),
            "budget": {"iterations": 1500, "eval_every": 50},
        },
    },
}


def mean_curve(rows: list[dict[str, Any]], label: str, metric: str) -> list[tuple[int, float]]:
    by_iter: dict[int, list[float]] = {}
    for r in rows:
        if r.get("event") == "eval" and r["label"] == label:
            by_iter.setdefault(int(r["sequential_steps"]), []).append(float(r[metric]))
    return [(k, statistics.fmean(v)) for k, v in sorted(by_iter.items())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=list(STUDIES))
    parser.add_argument("--out", default=str(ROOT / "docs/benchmarks/optex-workloads-study.json"))
    parser.add_argument("--runs", default="/tmp/optkit-workload-study")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite the markdown section from the JSON, run nothing",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    out_path = Path(args.out)
    results: dict[str, Any] = json.loads(out_path.read_text()) if out_path.exists() else {}
    if args.render_only:
        args.only = []
    for name in args.only:
        study = STUDIES[name]
        metric = study["metric"]
        task = {
            "name": f"{name}-study-cpu",
            "seeds": list(range(args.seeds)),
            "device": "cpu",
            "executor": {"name": "vmap"},
            **study["task"],
        }
        start = time.perf_counter()
        summary = optkit.run(task, out=Path(args.runs) / name)
        rows = load_rows(summary.out)
        obj = optkit.get_registry().create("objective", study["task"]["objective"])
        sign = -1.0 if obj.metric_direction().get(metric) == "max" else 1.0
        curves = {lab: mean_curve(rows, lab, metric) for lab in LABELS}
        goal = curves["vanilla"][-1][1]
        vanilla_iters = curves["vanilla"][-1][0]
        entry: dict[str, Any] = {
            "metric": metric,
            "vanilla_final": goal,
            "vanilla_iterations": vanilla_iters,
            "seeds": args.seeds,
            "task": task,
            "wall_s_total": time.perf_counter() - start,
            "methods": {},
        }
        walls = {}
        for lab in LABELS:
            walls[lab] = statistics.fmean(
                r["wall_s"]
                for r in rows
                if r.get("event") == "eval"
                and r["label"] == lab
                and int(r["sequential_steps"]) == curves[lab][-1][0]
            )
        for lab in LABELS:
            hit = next((it for it, v in curves[lab] if sign * v <= sign * goal), None)
            entry["methods"][lab] = {
                "final": curves[lab][-1][1],
                "iterations_to_vanilla_final": hit,
                "ratio": None if hit is None else hit / vanilla_iters,
                "wall_s_per_iteration": walls[lab] / curves[lab][-1][0],
                "curve": curves[lab],
            }
        results[name] = entry
        results["_measured"] = f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"
        out_path.write_text(json.dumps(results, indent=1))
        print(
            name,
            {
                k: (v["final"], v["iterations_to_vanilla_final"])
                for k, v in entry["methods"].items()
            },
            flush=True,
        )
    replace_section(DOC, "study", render(results))
    print(f"wrote {DOC}")


def render(results: dict[str, Any]) -> str:
    """The markdown section of the studies from the JSON results."""
    lines = [
        "## The three studies at CPU size: iterations to reach Vanilla's final metric",
        "",
        f"Measured {results.get('_measured', '?')} on {cpu_name()} (2 cores shared with other"
        " jobs; one torch thread), vmap executor, N = 4, seeds as listed, means over seeds."
        " Command:",
        "",
        "    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/workloads_study.py",
        "",
        "Ratio = sequential iterations a method needs to reach Vanilla Adam's final value"
        " (mean over seeds, checked at each evaluation) / Vanilla's iterations; '-' = not"
        " reached within the budget. Target is the idealized baseline (its proxy gradients are"
        " real gradients, free of wall-clock). s/it = CPU seconds per iteration (runner's"
        " wall_s; evaluation excluded).",
        "",
        "| study | metric | seeds | Vanilla final (iterations) | OptEx-N4 final / ratio |"
        " Target-N4 final / ratio | data_parallel-N4 final / ratio |"
        " s/it Vanilla / OptEx / Target / data_parallel |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, e in results.items():
        if name.startswith("_"):
            continue
        m = e["methods"]

        def cell(lab: str, m: dict[str, Any] = m) -> str:
            ratio = m[lab]["ratio"]
            return f"{m[lab]['final']:.4g} / " + ("-" if ratio is None else f"{ratio:.2f}")

        speeds = " / ".join(f"{m[lab]['wall_s_per_iteration']:.4f}" for lab in LABELS)
        lines.append(
            f"| {name} | {e['metric']} | {e['seeds']} |"
            f" {e['vanilla_final']:.4g} ({e['vanilla_iterations']}) | {cell('optex-N4')} |"
            f" {cell('target-N4')} | {cell('data_parallel-N4')} | {speeds} |"
        )
    lines.append("")
    for name, e in results.items():
        if name.startswith("_"):
            continue
        lines.append(
            f"- {name}: objective `{json.dumps(e['task']['objective'])}`, budget"
            f" `{json.dumps(e['task']['budget'])}`."
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
