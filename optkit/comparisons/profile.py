"""Performance profiles (Dolan & Moré 2002, "Benchmarking optimization software with
performance profiles", Math. Programming 91) over the objectives of a run.

For problems ``p`` (the objectives) and solvers ``s`` (the method labels) with costs
``t[p, s]`` (here: mean sequential steps to the target), the performance ratio is
``r[p, s] = t[p, s] / min_s' t[p, s']`` and the profile of ``s`` is
``rho_s(tau) = |{p : r[p, s] <= tau}| / |P|``: the fraction of objectives on which ``s`` is
within a factor ``tau`` of the best method. ``rho_s(1)`` is the fraction it wins (ties count
for every tied method); ``rho_s(tau)`` for large ``tau`` is the fraction it ever solves.

A method *solves* an objective when it reaches the target on every seed that has one; its
cost is then its mean steps to target, else infinite. Costs are floored at one step, so a
target met at the initial point does not divide by zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from optkit.comparisons.summary import Comparison


def profile_costs(comparison: Comparison) -> dict[str, dict[str, float]]:
    """label -> objective -> mean steps to target (``inf`` unless reached on every seed)."""
    costs: dict[str, dict[str, float]] = {}
    for row in comparison.rows:
        cost = row.steps_to_target
        ok = cost.seeds > 0 and cost.reached == cost.seeds and cost.interval.mean is not None
        value = (
            max(float(cost.interval.mean), 1.0)
            if ok and cost.interval.mean is not None
            else math.inf
        )
        costs.setdefault(row.label, {})[row.objective] = value
    return costs


def performance_ratios(costs: Mapping[str, Mapping[str, float]]) -> dict[str, np.ndarray]:
    """label -> ratios ``r[p, s]`` over the union of problems (sorted); ``inf`` where the
    label fails or lacks the problem, or where no label solves it."""
    problems = sorted({p for per in costs.values() for p in per})
    table = np.array(
        [[float(costs[s].get(p, math.inf)) for p in problems] for s in costs], dtype=float
    ).reshape(len(costs), len(problems))
    table[~np.isfinite(table)] = math.inf
    if table.size and np.any(table <= 0):
        raise ValueError("performance-profile costs must be positive")
    best = table.min(axis=0) if table.size else np.zeros(0)
    with np.errstate(invalid="ignore"):
        ratios = np.where(np.isfinite(best), table / best, math.inf)
    return {label: ratios[i] for i, label in enumerate(costs)}


def performance_profile(
    costs: Mapping[str, Mapping[str, float]], taus: np.ndarray | None = None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(taus, {label: rho(taus)})``: the fraction of problems each label solves within a
    factor ``tau`` of the best. Default ``taus``: 1 and every finite ratio, sorted."""
    ratios = performance_ratios(costs)
    if taus is None:
        finite = np.concatenate([r[np.isfinite(r)] for r in ratios.values()] or [np.zeros(0)])
        taus = np.unique(np.concatenate([[1.0], finite]))
    taus = np.asarray(taus, dtype=float)
    profiles = {
        label: (r[None, :] <= taus[:, None]).mean(axis=1) if r.size else np.zeros(taus.size)
        for label, r in ratios.items()
    }
    return taus, profiles


def plot_profile(comparison: Comparison, path: Path, title: str = "") -> Path | None:
    """Write the performance-profile figure (PNG) of ``comparison``'s steps to target;
    ``None`` (nothing written) with fewer than two objectives."""
    costs = profile_costs(comparison)
    problems = {p for per in costs.values() for p in per}
    if len(problems) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    taus, profiles = performance_profile(costs)
    top = float(taus.max()) * 1.5 if taus.size else 2.0
    grid = np.concatenate([taus, [max(top, 2.0)]])
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    for label, rho in profiles.items():
        ax.step(grid, np.concatenate([rho, rho[-1:]]), where="post", label=label)
    ax.set_xscale("log", base=2)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("tau: within this factor of the best method's steps to target")
    ax.set_ylabel(f"fraction of the {len(problems)} objectives")
    ax.set_title(title or "performance profile (Dolan & Moré), steps to target")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
