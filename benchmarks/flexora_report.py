"""The Flexora benchmark's report from its JSONL rows: per-task tables, goal checks, ablation,
gates-per-layer figures (``flexora_report.md``, ``flexora_gates.png``,
``flexora_ablation_gates.png`` in the report folder)."""

from __future__ import annotations

import itertools
import json
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ORDER = ("flexora", "random", "lora", "dora", "rslora", "adalora", "lora_drop", "full")
MODE_ORDER = ("first_order", "unrolled", "finite_difference")


def load(paths: Iterable[Path]) -> list[dict[str, Any]]:
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows[(row.get("job", ""), row["method"])] = row  # later files win
    return list(rows.values())


def mean(xs: Iterable[float]) -> float:
    xs = list(xs)
    return statistics.fmean(xs) if xs else float("nan")


def sd(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def acc_cell(xs: list[float]) -> str:
    if not xs:
        return "-"
    return f"{mean(xs):.3f} ± {sd(xs):.3f} ({min(xs):.3f}–{max(xs):.3f})"


def jaccard(a: Iterable[int], b: Iterable[int]) -> float:
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def ok_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("status", "ok") == "ok"]


def main_table(rows: list[dict[str, Any]], task: str) -> list[str]:
    out = [
        f"\n### {task}\n",
        "| method | test accuracy: mean ± sd (min–max) | seeds | layers trained | trainable"
        " params | search s | fine-tune s | search / fine-tune | peak GPU MB (stage) |"
        " peak GPU MB (job) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for method in ORDER:
        rs = [r for r in rows if r["task"] == task and r["method"] == method]
        if not rs:
            continue
        layers = [r["layers_trained"] for r in rs]
        lay = f"{mean(layers):.1f}" + (
            f" ({min(layers)}–{max(layers)})" if len(set(layers)) > 1 else ""
        )
        ratio = mean(r["search_s"] / r["finetune_s"] for r in rs if r["finetune_s"] > 0)
        out.append(
            f"| {method} | {acc_cell([r['test_accuracy'] for r in rs])} | {len(rs)} | {lay} |"
            f" {mean(r['trainable_params'] for r in rs):,.0f} |"
            f" {mean(r['search_s'] for r in rs):.1f} |"
            f" {mean(r['finetune_s'] for r in rs):.1f} |"
            f" {'-' if ratio == 0 else f'{100 * ratio:.0f}%'} |"
            f" {mean(r['peak_memory_mb'] for r in rs):,.0f} |"
            f" {mean(r.get('job_peak_memory_mb', 0.0) for r in rs):,.0f} |"
        )
    flex = [r for r in rows if r["task"] == task and r["method"] == "flexora"]
    for r in sorted(flex, key=lambda r: r["seed"]):
        out.append(f"\nFlexora seed {r['seed']}: layers {','.join(map(str, r['layers']))}")
    return out


def by_seed(rows: list[dict[str, Any]], task: str, method: str) -> dict[int, float]:
    return {
        r["seed"]: r["test_accuracy"] for r in rows if r["task"] == task and r["method"] == method
    }


def goals(rows: list[dict[str, Any]], tasks: list[str]) -> list[str]:
    out = [
        "\n## Goal checks (computed from the rows)\n",
        "| task | Flexora share of layers | Flexora − LoRA (means) | paired Flexora − LoRA"
        " per seed | Flexora − random (means) | search / fine-tune (mean, max) | met |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    wins, rand_diffs, ratios = 0, [], []
    compared = 0
    for task in tasks:
        flex = [r for r in rows if r["task"] == task and r["method"] == "flexora"]
        if not flex:
            continue
        share = mean(r["layers_trained"] / r["num_layers"] for r in flex)
        f, lo, ra = (by_seed(rows, task, m) for m in ("flexora", "lora", "random"))
        r_task = [r["search_s"] / r["finetune_s"] for r in flex if r["finetune_s"] > 0]
        ratios += r_task
        d_lora = mean(f.values()) - mean(lo.values()) if lo else float("nan")
        paired = [f[s] - lo[s] for s in f if s in lo]
        d_rand = mean(f.values()) - mean(ra.values()) if ra else float("nan")
        if ra:
            rand_diffs.append(d_rand)
        met = bool(lo) and d_lora >= 0 and share <= 0.6
        compared += bool(lo)
        wins += met
        out.append(
            f"| {task} | {share:.0%} | {d_lora:+.3f} |"
            f" {mean(paired):+.3f} ± {sd(paired):.3f} (n={len(paired)}) | {d_rand:+.3f} |"
            f" {100 * mean(r_task):.0f}%, {100 * max(r_task):.0f}% |"
            f" {'yes' if met else 'no'} |"
        )
    out += [
        "",
        f"- Flexora >= LoRA-all with <= 60% of the layers: **{wins} of {compared}** tasks with a"
        f" LoRA baseline (goal: >= 3 of 4) -> {'met' if wins >= 3 else 'not met'}.",
        f"- Flexora − random, mean over {len(rand_diffs)} tasks: **{mean(rand_diffs):+.3f}**"
        f" -> {'met' if rand_diffs and mean(rand_diffs) > 0 else 'not met'}.",
        f"- Search / fine-tune wall-clock over {len(ratios)} Flexora cells: mean"
        f" **{100 * mean(ratios):.0f}%**, max {100 * max(ratios, default=float('nan')):.0f}%"
        f" (goal <= 25%) -> {ratio_verdict(ratios)}.",
        "- Per-step cost (search step / Flexora fine-tune step): "
        + ", ".join(
            f"{r['task']} s{r['seed']} {step_ratio(r):.2f}"
            for r in rows
            if r["method"] == "flexora" and r.get("suite") == "main"
        ),
    ]
    return out


def ratio_verdict(ratios: list[float]) -> str:
    if not ratios:
        return "no data"
    if max(ratios) <= 0.25:
        return "met (every cell)"
    return "met on the mean, not in every cell" if mean(ratios) <= 0.25 else "not met"


def step_ratio(r: dict[str, Any]) -> float:
    return (r["search_s"] / r["search_steps"]) / (r["finetune_s"] / r["finetune_steps"])


def ablation(rows: list[dict[str, Any]]) -> list[str]:
    """Flexora rows of the ablation suite plus the main suite's (first_order, default budget)
    cells of the same tasks."""
    abl = [r for r in rows if r["method"] == "flexora" and r.get("suite") == "ablation"]
    if not abl:
        return ["\n## Ablation\n", "No ablation rows."]
    tasks = list(dict.fromkeys(r["task"] for r in abl))
    flex = [r for r in rows if r["method"] == "flexora" and r["task"] in tasks]
    out = [
        "\n## Ablation: hypergradient mode and search budget\n",
        "Jaccard overlap of the selected layers: against first_order at the same budget and"
        " seed (`vs first_order`), between the seeds of one configuration (`across seeds`).\n",
        "| task | mode | search steps | seeds | layers selected (mean) | test accuracy |"
        " search s | search / fine-tune | vs first_order | across seeds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    details = []
    for task in tasks:
        budgets = sorted({r["search_steps"] for r in flex if r["task"] == task})
        for steps, mode in itertools.product(budgets, MODE_ORDER):
            rs = [
                r
                for r in flex
                if r["task"] == task and r["search_steps"] == steps and r["hypergradient"] == mode
            ]
            if not rs:
                continue
            ref = {
                r["seed"]: r["layers"]
                for r in flex
                if r["task"] == task
                and r["search_steps"] == steps
                and r["hypergradient"] == "first_order"
            }
            vs = [jaccard(r["layers"], ref[r["seed"]]) for r in rs if r["seed"] in ref]
            across = [jaccard(a["layers"], b["layers"]) for a, b in itertools.combinations(rs, 2)]
            out.append(
                f"| {task} | {mode} | {steps} | {len(rs)} |"
                f" {mean(r['layers_trained'] for r in rs):.1f} |"
                f" {acc_cell([r['test_accuracy'] for r in rs])} |"
                f" {mean(r['search_s'] for r in rs):.1f} |"
                f" {100 * mean(r['search_s'] / r['finetune_s'] for r in rs):.0f}% |"
                f" {mean(vs) if mode != 'first_order' and vs else float('nan'):.2f} |"
                f" {mean(across) if across else float('nan'):.2f} |"
            )
            for r in sorted(rs, key=lambda r: r["seed"]):
                details.append(
                    f"- {task} {mode} {steps} steps, seed {r['seed']}:"
                    f" {','.join(map(str, r['layers']))}"
                )
        for mode in MODE_ORDER:
            pairs = {}
            for r in flex:
                if r["task"] == task and r["hypergradient"] == mode:
                    pairs.setdefault(r["seed"], {})[r["search_steps"]] = r["layers"]
            if len(budgets) > 1:
                lo, hi = budgets[0], budgets[-1]
                js = [jaccard(p[lo], p[hi]) for p in pairs.values() if lo in p and hi in p]
                if js:
                    out.append(
                        f"\n{task}, {mode}: Jaccard of the selections at {lo} vs {hi} search"
                        f" steps (same seed): {mean(js):.2f} (n={len(js)})"
                    )
    return [*out, "\nSelected layers:\n", *details]


def gates_figure(rows: list[dict[str, Any]], path: Path, suite: str) -> bool:
    """Final gates per layer: one panel per task; main suite: every seed's Flexora gates;
    ablation: the seed-mean gates of each (mode, budget). Returns whether a figure was drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    flex = [r for r in rows if r["method"] == "flexora" and "final_gates" in r]
    if suite == "ablation":
        tasks = list(dict.fromkeys(r["task"] for r in flex if r.get("suite") == "ablation"))
    else:
        flex = [r for r in flex if r.get("suite") == "main"]
        tasks = list(dict.fromkeys(r["task"] for r in flex))
    if not tasks:
        return False
    fig, axes = plt.subplots(len(tasks), 1, figsize=(10, 2.6 * len(tasks)), squeeze=False)
    for ax, task in zip(axes[:, 0], tasks, strict=True):
        rs = [r for r in flex if r["task"] == task]
        if suite == "ablation":
            keys = sorted({(r["hypergradient"], r["search_steps"]) for r in rs})
            for mode, steps in keys:
                gs = [
                    r["final_gates"]
                    for r in rs
                    if (r["hypergradient"], r["search_steps"]) == (mode, steps)
                ]
                avg = [mean(col) for col in zip(*gs, strict=True)]
                ax.plot(
                    range(len(avg)),
                    avg,
                    marker="o",
                    ms=3,
                    label=f"{mode}, {steps} steps (n={len(gs)})",
                )
        else:
            for r in sorted(rs, key=lambda r: r["seed"]):
                g = r["final_gates"]
                ax.plot(range(len(g)), g, marker="o", ms=3, label=f"seed {r['seed']}")
                ax.scatter(
                    r["layers"],
                    [g[i] for i in r["layers"]],
                    s=40,
                    facecolors="none",
                    edgecolors="k",
                )
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_title(
            f"{task}: final gate L·softmax(a) per layer"
            + (" (circled: selected)" if suite != "ablation" else "")
        )
        ax.set_xlabel("layer")
        ax.set_ylabel("gate")
        ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def report(rows: list[dict[str, Any]]) -> str:
    good = ok_rows(rows)
    main = [r for r in good if r.get("suite", "main") == "main"]
    tasks = list(dict.fromkeys(r["task"] for r in main))
    out = ["# Flexora benchmark report", "\n## Per task (main suite)"]
    flex = [r for r in main if r["method"] == "flexora"]
    if main:
        r0 = main[0]
        out.append(
            f"\nScale: {r0.get('train_size')} train / {r0.get('test_size')} test examples,"
            f" batch {r0.get('batch_size')}, {r0.get('finetune_steps')} fine-tune steps; Flexora"
            f" search steps {sorted({r['search_steps'] for r in flex})},"
            f" gate lr {sorted({r['gate_lr'] for r in flex})}."
        )
    for task in tasks:
        out += main_table(main, task)
    out += goals(main, tasks)
    out += ablation(good)
    failed = [r for r in rows if r.get("status", "ok") != "ok"]
    if failed:
        out.append("\n## Failed jobs\n")
        out += [f"- {r['job']}: {str(r.get('error', '')).splitlines()[0][:300]}" for r in failed]
    return "\n".join(out)


def write_report(paths: Iterable[Path], folder: Path | None) -> str:
    rows = load(paths)
    text = report(rows)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        good = ok_rows(rows)
        figs = []
        if gates_figure(good, folder / "flexora_gates.png", "main"):
            figs.append("![gates per layer](flexora_gates.png)")
        if gates_figure(good, folder / "flexora_ablation_gates.png", "ablation"):
            figs.append("![gates per layer, ablation](flexora_ablation_gates.png)")
        text += "\n\n" + "\n\n".join(figs)
        (folder / "flexora_report.md").write_text(text + "\n")
    return text
