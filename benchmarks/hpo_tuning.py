"""Benchmark: BoTorch vs random search tuning Adam on Rosenbrock (issue 6).

For each problem (``mnist``: an MLP on 5k real MNIST digits; ``rosenbrock``: d = 50) runs
``tasks/hpo-<problem>-botorch.toml`` and ``tasks/hpo-<problem>-random.toml`` through the optkit
runner (every trial is a real inner training run), then reports per seed:

* both methods' best score after every trial (the curves, mean over seeds);
* the trials BoTorch needs to reach random search's best score after all its trials;
* the BO loop's own cost per round (GP fit + acquisition optimization) against the cost of
  one trial (the inner run).

Usage::

    python benchmarks/hpo_tuning.py                      # 5 seeds x 30 trials, writes docs
    python benchmarks/hpo_tuning.py --problems rosenbrock --seeds 0 1 --trials 12 --no-docs

Writes ``docs/benchmarks/hpo.md`` and ``docs/benchmarks/hpo-<problem>.png`` unless
``--no-docs``.
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from optkit.results import load_rows
from optkit.runner import run_task
from optkit.tasks import load_task, read_task_file

ROOT = Path(__file__).resolve().parents[1]
PROBLEMS: dict[str, dict[str, str]] = {
    "mnist": {
        "title": "Adam on an MLP, 5k real MNIST digits",
        "setting": "an MLP on 5,000 real MNIST digits (3.5k train / 500 validation / 1k test),"
        " 100 Adam iterations of minibatch 64 per trial; score = final validation loss (the"
        " test split is never used for selection). Space: `optimizer.lr` in"
        " [1e-5, 1] (log), `optimizer.betas.0` in [0.5, 0.99], `optimizer.betas.1` in"
        " [0.9, 0.9999]",
        "trial": "100 Adam iterations of an MNIST MLP",
    },
    "rosenbrock": {
        "title": "Adam on Rosenbrock, d = 50",
        "setting": "Rosenbrock d = 50, 300 Adam iterations per trial (exact gradients) from the"
        " seed's initial point in [-2, 2]^50; score = final loss. Space: `optimizer.lr` in"
        " [1e-3, 3] (log), `optimizer.betas.0` in [0.5, 0.99], `optimizer.betas.1` in"
        " [0.9, 0.9999]",
        "trial": "300 Adam iterations, d = 50",
    },
}


def tasks_of(problem: str) -> dict[str, Path]:
    return {
        "botorch": ROOT / "tasks" / f"hpo-{problem}-botorch.toml",
        "random_search": ROOT / "tasks" / f"hpo-{problem}-random.toml",
    }


def run_method(path: Path, seeds: list[int], trials: int, out: Path) -> list[dict[str, Any]]:
    raw = read_task_file(path)
    raw["seeds"] = seeds
    raw["hyperoptimizer"]["trials"] = trials
    task = load_task(raw)
    run_task(task, out, progress=lambda message: print("   ", message, file=sys.stderr))
    return load_rows(out / "results.jsonl")


def best_so_far(scores: list[float]) -> list[float]:
    out, best = [], math.inf
    for s in scores:
        if math.isfinite(s):
            best = min(best, s)
        out.append(best)
    return out


def first_reaching(curve: list[float], target: float) -> int | None:
    """1-based trial at which ``curve`` (best so far) is <= ``target``; None if never."""
    for i, value in enumerate(curve, 1):
        if value <= target:
            return i
    return None


def analyse(rows: dict[str, list[dict[str, Any]]], seeds: list[int]) -> dict[str, Any]:
    curves: dict[str, dict[int, list[float]]] = {}
    costs: dict[str, list[float]] = {}
    for method, method_rows in rows.items():
        curves[method] = {}
        costs[method] = []
        for seed in seeds:
            trials = sorted(
                (r for r in method_rows if r["seed"] == seed and r.get("event") == "trial"),
                key=lambda r: r["trial"],
            )
            scores = [math.nan if r["score"] is None else float(r["score"]) for r in trials]
            curves[method][seed] = best_so_far(scores)
            costs[method] += [float(r["trial_wall_s"]) for r in trials]
    rounds = [
        r for r in rows["botorch"] if r.get("event") == "trace" and r.get("hpo_event") == "round"
    ]
    return {"curves": curves, "costs": costs, "rounds": rounds}


def section(problem: str, result: dict[str, Any], seeds: list[int], trials: int) -> str:
    """The markdown section of one problem (and its figure ``hpo-<problem>.png``)."""
    info = PROBLEMS[problem]
    curves, costs, rounds = result["curves"], result["costs"], result["rounds"]
    bo, rs = curves["botorch"], curves["random_search"]
    lines = []
    reached: list[int | None] = []
    for seed in seeds:
        target = rs[seed][-1]
        hit = first_reaching(bo[seed], target)
        rs_hit = first_reaching(rs[seed], target)
        reached.append(hit)
        lines.append(
            f"| {seed} | {rs[seed][-1]:.4g} | {rs_hit} | {bo[seed][-1]:.4g} |"
            f" {hit if hit is not None else f'not in {trials}'} |"
        )
    counted = [h if h is not None else trials + 1 for h in reached]
    mean_hit = statistics.mean(counted)
    never = sum(h is None for h in reached)
    checkpoints = sorted({1, 5, 6, 10, 15, 20, 25, trials} & set(range(1, trials + 1)))

    def mean_log(curve_set: dict[int, list[float]], t: int) -> float:
        return statistics.mean(math.log10(curve_set[s][t - 1]) for s in seeds)

    curve_lines = [
        f"| {t} | {10 ** mean_log(rs, t):.4g} | {10 ** mean_log(bo, t):.4g} |" for t in checkpoints
    ]
    fit = [float(r["fit_s"]) for r in rounds]
    acq = [float(r["acq_s"]) for r in rounds]
    q = [int(r["q"]) for r in rounds]
    overhead = (sum(fit) + sum(acq)) / max(1, sum(q))
    trial_cost = statistics.mean(costs["botorch"] + costs["random_search"])
    header = (
        f"| seed | random search best after {trials} | trial where random search got it"
        f" | BoTorch best after {trials} | BoTorch trials to reach random's best |"
    )
    plot(problem, result, seeds, trials)
    met = "met" if mean_hit <= trials / 2 else "not met"
    return f"""## {info["title"]}

Setting: {info["setting"]}. Tasks `tasks/hpo-{problem}-botorch.toml` and
`tasks/hpo-{problem}-random.toml`.

### Trials BoTorch needs to reach random search's best

{header}
|---|---|---|---|---|
{chr(10).join(lines)}

Mean trials BoTorch needed: **{mean_hit:.1f}** of {trials} (a seed where BoTorch never
reached it counts as {trials + 1}; {never} such seed(s)). Issue 6's goal, at most
{trials / 2:.0f} (half as many): **{met}**.

### Best score so far (geometric mean over seeds)

| trial | random search | BoTorch |
|---|---|---|
{chr(10).join(curve_lines)}

![best score vs trials, {problem}](hpo-{problem}.png)

### Cost of the BO loop against the cost of a trial

| | seconds |
|---|---|
| GP fit per round (mean) | {statistics.mean(fit):.3f} |
| acquisition optimization per round (mean) | {statistics.mean(acq):.3f} |
| BO overhead per proposed trial (fit + acquisition) | {overhead:.3f} |
| one trial = {info["trial"]} (mean) | {trial_cost:.3f} |
| overhead / trial cost | {overhead / trial_cost:.2f}x |
"""


def write_docs(sections: list[str], seeds: list[int], trials: int, wall: float) -> None:
    initial = read_task_file(tasks_of("mnist")["botorch"])["hyperoptimizer"]["initial_trials"]
    text = f"""# Black-box HPO: BoTorch vs random search

Both hyperoptimizers tune Adam's learning rate (log scale) and both betas; every trial is a
real inner training run through the optkit runner. BoTorch: {initial} Sobol points
(`initial_trials`, the default `max(4, parameters + 1)` for 3 parameters), then one point
per round (SingleTaskGP with BoTorch's default priors fitted by marginal likelihood, qLogEI,
rank-transformed scores (Gaussian copula), defaults `num_restarts = 8`, `raw_samples = 256`,
`mc_samples = 128`).
Random search: uniform draws (log-uniform for lr). {trials} trials per run, seeds
{seeds}; a seed fixes the hyperoptimizer's draws and the inner problem's initialization
and minibatches, the same for both methods.

- Command: `python benchmarks/hpo_tuning.py` (runs the tasks below through
  `optkit.runner.run_task`)
- Date: {datetime.date.today().isoformat()}; total wall time of the runs {wall:.0f} s
- Hardware: CPU only ({platform.machine()}, 2 cores), {torch.get_num_threads()} torch
  thread, torch {torch.__version__}; the machine was shared with other jobs, so absolute
  seconds are noisy (the ratios less so).

{chr(10).join(sections)}
## Reading the numbers

Random search's best after 30 trials is one lucky draw per seed, so "trials BoTorch needs to
reach it", averaged over 5 seeds, moves by several trials between seed sets and between
settings that are equally good. Settings were therefore also compared on 10 further seeds
(same tasks and spaces, `--seeds 5 6 7 8 9 10 11 12 13 14`) besides the reported seeds 0-4.
Mean trials to reach random search's best (in brackets: seeds where BoTorch never reached it
in 30 trials, counted as 31):

| BoTorch setting (seeds) | MNIST 0-4 | MNIST 5-14 | Rosenbrock 0-4 | Rosenbrock 5-14 |
|---|---|---|---|---|
| 6 Sobol points (the previous default) | 15.8 (0) | 11.7 (0) | 15.2 (1) | 22.5 (4) |
| **4 Sobol points (default)** | 12.8 (0) | 11.9 (1) | 17.6 (2) | 22.0 (5) |
| 3 Sobol points | 13.8 (1) | | 19.2 (1) | |
| 2 Sobol points | 12.4 (1) | 10.7 (2) | 12.8 (0) | 23.7 (5) |
| 4 Sobol, `acquisition = "lognei"` | 10.2 (0) | 13.7 (1) | 17.2 (2) | 21.3 (5) |
| 4 Sobol, `gp_prior = "matern_gamma"` | 12.8 (0) | 11.2 (0) | 19.4 (2) | 21.0 (4) |
| 4 Sobol, `noise = "none"` | | | | 22.2 (5) |

On MNIST every setting reaches random search's best in about 11-13 trials over the 15 seeds
(6 Sobol points: 13.1, 4: 12.2); the 15.8 of the previous report was a high draw on seeds
0-4. The smaller design is the default because it leaves more trials to the GP, which helps
a little on MNIST (15 seeds: 12.2 against 13.1) and is a wash on Rosenbrock (20.5 against
20.1); the difference is within the seed-to-seed spread. No alternative model or
acquisition is better on both seed sets: qLogNoisyEI (for the noisy validation loss) gave
10.2 on seeds 0-4 but 13.7 on seeds 5-14, so it stays an option, not the default; so do
`gp_prior = "matern_gamma"` and `noise = "none"`. Also tried and not kept: warm-starting
each round's GP fit from the previous round's hyperparameters (under 10% less fit time, no
better on seeds 5-14: 12.7 and 22.6) and BoTorch's `Warp` input warping (seconds per round,
more than 10x the cost of a trial here).

On Rosenbrock no setting meets the goal over the 15 seeds (about 20 trials on average, and
4-5 of seeds 5-14 never reached). The final loss after 300 Adam steps is heavy-tailed in
the hyperparameters: in random draws restricted to lr in [1, 3] (seeds 6 and 8, 30 draws
each) the median final loss was 80-110 and the best 3.0-35, while in the basin BoTorch
converges to (lr 0.1-0.3, beta1 0.85-0.95, beta2 near 0.9) the median was 12-20 and the best
6.9-12.9. Random search's best on seeds 6, 8 and 14 (3.06, 3.53, 1.90) came from single
draws at lr 1.1-3.0, a region whose typical trial is poor, so a surrogate that models the
typical outcome rightly avoids it; on seed 4 random search's first draw (0.165) is already
better than anything BoTorch finds. After 30 trials BoTorch's best beats random search's on 9
of the 10 MNIST seeds 5-14 but only on 5 of the 10 Rosenbrock ones (4 Sobol points).

The BO loop's own cost per proposed trial (GP fit plus multi-start acquisition optimization)
is 0.1-0.2 s on this CPU; it grows with the number of observations,
`num_restarts`, `raw_samples`, `batch_size` and categorical enumeration
(`acquisition = "lognei"`: about 1.3x the acquisition time). Where a trial costs less than
that (the Rosenbrock trials), BoTorch can only pay off when trials, not seconds, are the
scarce resource; halving `num_restarts` would save only about a fifth of the acquisition
time, so the defaults stay. The inner MNIST runs are not bit-reproducible across processes
on this CPU (the same configuration and seed gave losses differing in the 7th digit, and more
on trials with a diverging learning rate), so a rerun can move the MNIST numbers slightly.
"""
    out = ROOT / "docs" / "benchmarks" / "hpo.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


def plot(problem: str, result: dict[str, Any], seeds: list[int], trials: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    x = list(range(1, trials + 1))
    for method, color in (("random_search", "tab:gray"), ("botorch", "tab:blue")):
        curves = result["curves"][method]
        for seed in seeds:
            ax.plot(x, curves[seed], color=color, alpha=0.25, linewidth=0.8)
        mean = [
            10 ** statistics.mean(math.log10(curves[s][t]) for s in seeds) for t in range(trials)
        ]
        ax.plot(x, mean, color=color, linewidth=2, label=f"{method} (geometric mean)")
    ax.set_yscale("log")
    # zoom on the part where the methods differ: from the end of the Sobol design on
    values = [c[t] for m in result["curves"].values() for c in m.values() for t in range(trials)]
    late = [c[min(5, trials - 1)] for m in result["curves"].values() for c in m.values()]
    ax.set_ylim(0.97 * min(values), 1.2 * max(late))
    ax.set_xlabel("trial")
    ax.set_ylabel("best score so far")
    ax.set_title(f"{PROBLEMS[problem]['title']} (thin: single seeds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "benchmarks" / f"hpo-{problem}.png", dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", nargs="+", choices=list(PROBLEMS), default=list(PROBLEMS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="keep the run directories here")
    parser.add_argument(
        "--analyse-only", action="store_true", help="re-read the run directories under --out"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    wall = 0.0
    sections = []
    with tempfile.TemporaryDirectory() as tmp:
        base = args.out or Path(tmp)
        for problem in args.problems:
            rows = {
                method: load_rows(base / problem / method / "results.jsonl")
                if args.analyse_only
                else run_method(path, args.seeds, args.trials, base / problem / method)
                for method, path in tasks_of(problem).items()
            }
            wall += sum(
                float(r.get("cell_wall_s", 0.0))
                for method_rows in rows.values()
                for r in method_rows
                if r.get("event") == "end"
            )
            result = analyse(rows, args.seeds)
            for method, curves in result["curves"].items():
                print(problem, method, {s: round(c[-1], 4) for s, c in curves.items()})
            if not args.no_docs:
                sections.append(section(problem, result, args.seeds, args.trials))
    if not args.no_docs:
        write_docs(sections, args.seeds, args.trials, wall)


if __name__ == "__main__":
    main()
