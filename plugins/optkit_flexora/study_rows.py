"""Rows a reader can recompute: one per (task, seed, method, draw) of a Flexora study.

A Flexora cell's ``end`` row holds Flexora's metrics unprefixed and its random controls as
``random_`` / ``random_d1_`` ...; a ``lora_baselines`` cell's holds ``<method>_<metric>`` for
each method (and ``random_d<k>_`` draws). :func:`study_rows` turns both into the flat rows of
``docs/benchmarks/flexora_results.jsonl`` (issue 17, point 5), and :func:`paired_differences`
computes the doc's tables from them: per task, method A minus method B on the same seeds (the
mean over a method's draws first), with a paired bootstrap 95% CI.

Usage::

    python -m optkit_flexora.study_rows RUN_DIR [RUN_DIR ...] --suite regime [--append FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from optkit.comparisons.bootstrap import Interval, paired_bootstrap
from optkit_flexora.baselines import METHODS as BASELINE_METHODS

ROW_KEYS = (
    "suite",
    "task",
    "seed",
    "method",
    "draw",
    "test_log_loss",
    "test_accuracy",
    "test_size",
    "layers_trained",
    "num_layers",
    "search_s",
    "finetune_s",
    "status",
)
"""The keys every row has (issue 17, point 5); rows also carry ``lr``, ``val_log_loss``,
``overfit_nats`` and ``best_val_step`` where the run reports them, and ``run`` (its folder)."""


def _draw_prefixes(end: Mapping[str, Any], base: str) -> list[tuple[int, str]]:
    """``[(draw, prefix)]`` of ``base`` in ``end``: ``random_``, then ``random_d<k>_``."""
    out = [(0, f"{base}_")] if f"{base}_test_loss" in end else []
    k = 1
    while f"{base}_d{k}_test_loss" in end:
        out.append((k, f"{base}_d{k}_"))
        k += 1
    return out


def _row(end: Mapping[str, Any], prefix: str, method: str, draw: int, suite: str) -> dict[str, Any]:
    def get(key: str, default: Any = None) -> Any:
        return end.get(f"{prefix}{key}", default)

    search = 0.0
    if prefix == "":  # a Flexora cell's own row: its search and selection
        search = float(end.get("search_s", 0.0)) + float(end.get("selection_s", 0.0))
    elif method == "lora_drop":
        search = float(end.get("lora_drop_search_s", 0.0))
    row: dict[str, Any] = {
        "suite": suite,
        "task": end.get("objective"),
        "seed": end.get("seed"),
        "method": method,
        "draw": draw,
        "test_log_loss": get("test_loss"),
        "test_accuracy": get("test_accuracy"),
        "test_size": get("test_size"),
        "layers_trained": get("layers_trained"),
        "num_layers": get("num_layers"),
        "search_s": search,
        "finetune_s": get("finetune_s"),
        "status": end.get("status", "ok"),
        "val_log_loss": get("val_loss"),
        "overfit_nats": get("overfit_nats"),
        "best_val_step": get("best_val_step"),
        "lr": _learning_rate(end.get("optimizer_spec") or {}),
    }
    return row


def _learning_rate(spec: Mapping[str, Any]) -> Any:
    """The inner optimizer's learning rate: ``lr``, or a wrapper's ``base_config.lr`` (OptEx)."""
    if "lr" in spec:
        return spec["lr"]
    return (spec.get("base_config") or {}).get("lr")


def rows_from_end(end: Mapping[str, Any], suite: str) -> list[dict[str, Any]]:
    """The study rows of one cell's ``end`` row (Flexora or ``lora_baselines``; else none)."""
    hyper = end.get("hyperoptimizer")
    rows: list[dict[str, Any]] = []
    random = "random"
    if hyper == "flexora":
        # a Flexora label other than "flexora" (e.g. "flexora_early_stop") names its rows, and
        # its random controls are "random[<label>]"
        label = str(end.get("label", "flexora")).split(":", 1)[0]
        rows.append(_row(end, "", label, 0, suite))
        random = "random" if label == "flexora" else f"random[{label}]"
    elif hyper == "lora_baselines":
        for method in BASELINE_METHODS:
            if method != "random" and f"{method}_test_loss" in end:
                rows.append(_row(end, f"{method}_", method, 0, suite))
    else:
        return rows
    rows.extend(_row(end, p, random, d, suite) for d, p in _draw_prefixes(end, "random"))
    return rows


def study_rows(run_dirs: Iterable[str | Path], suite: str) -> list[dict[str, Any]]:
    """Rows of every measured ``end`` row in the runs' ``results.jsonl`` (tuning trials,
    ``phase = "tuning"``, are left out; a failed cell gives no row)."""
    rows: list[dict[str, Any]] = []
    for run in run_dirs:
        path = Path(run) / "results.jsonl"
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            if record.get("event") != "end" or record.get("phase", "measure") != "measure":
                continue
            for row in rows_from_end(record, suite):
                rows.append({**row, "run": Path(run).name})
    return rows


def paired_differences(
    rows: Sequence[Mapping[str, Any]],
    method: str,
    baseline: str,
    metric: str = "test_log_loss",
    seed: int = 0,
) -> dict[str, tuple[Interval, int]]:
    """Per task, ``mean(baseline - method)`` of ``metric`` over the seeds both have (draws
    averaged within a seed first) with a paired bootstrap 95% CI, and the number of pairs.

    The sign is "improvement of ``method``": positive means ``method`` has the lower
    ``metric`` (for log-loss; pass ``metric = "test_accuracy"`` and read a negative value as
    ``method`` better in accuracy).
    """
    by: dict[tuple[str, str, int], list[float]] = {}
    for r in rows:
        value = r.get(metric)
        if r.get("status", "ok") != "ok" or value is None:
            continue
        by.setdefault((str(r["task"]), str(r["method"]), int(r["seed"])), []).append(float(value))
    out: dict[str, tuple[Interval, int]] = {}
    for task in sorted({t for t, _, _ in by}):
        seeds = sorted(
            s for (t, m, s) in by if t == task and m == method and (t, baseline, s) in by
        )
        a = np.array([np.mean(by[(task, baseline, s)]) for s in seeds])
        b = np.array([np.mean(by[(task, method, s)]) for s in seeds])

        def difference(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            result: np.ndarray = (x - y).mean(axis=-1)
            return result

        out[task] = (paired_bootstrap(a, b, difference, seed=seed), len(seeds))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m optkit_flexora.study_rows",
        description="one row per (task, seed, method, draw) of Flexora / lora_baselines runs",
    )
    parser.add_argument("runs", nargs="+", help="run folders (each with a results.jsonl)")
    parser.add_argument("--suite", required=True, help='the study\'s name, e.g. "regime"')
    parser.add_argument("--append", help="append the rows to this JSONL file (else stdout)")
    args = parser.parse_args(argv)
    missing = [r for r in args.runs if not (Path(r) / "results.jsonl").is_file()]
    if missing:
        print(f"error: no results.jsonl in {', '.join(missing)}", file=sys.stderr)
        return 2
    rows = study_rows(args.runs, args.suite)
    if not rows:
        print(
            f"error: no measured Flexora or lora_baselines end rows in {', '.join(args.runs)}",
            file=sys.stderr,
        )
        return 2
    text = "".join(json.dumps(row) + "\n" for row in rows)
    if args.append:
        with open(args.append, "a") as handle:
            handle.write(text)
        print(f"appended {len(rows)} rows to {args.append}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
