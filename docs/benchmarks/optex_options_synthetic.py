"""Issue 19 sanity check on the synthetic functions (CPU, small size): OptEx's new options
against its defaults, in sequential iterations to vanilla Adam's 40-iteration loss (the
measure of ``docs/benchmarks/optex-synthetic.md``), exact and noisy gradients, N = 5.

    OMP_NUM_THREADS=1 .venv/bin/python docs/benchmarks/optex_options_synthetic.py

Prints a Markdown table (median over seeds, range), the rows of
``docs/benchmarks/optex-networks.md``'s synthetic check.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from optex_synthetic import first_hit, fmt_hits, trajectory, wrap  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "fit = forward": {"fit": "forward"},
    "fit = reference": {"fit": "reference"},
    "noise_estimate = spread": {"noise_estimate": "spread"},
    "effective_dim = 100": {"effective_dim": 100},
    "stop_variance = 0.3": {"stop_variance": 0.3},
}
CASES = [("sphere", 0.0), ("rosenbrock", 0.0), ("sphere", 10.0), ("rosenbrock", 1000.0)]


def main(seeds: tuple[int, ...] = (0, 1, 2), d: int = 1000, n: int = 5) -> None:
    torch.set_num_threads(1)
    head = " | ".join(f"{fn}, noise {noise:g}" for fn, noise in CASES)
    print(f"| OptEx N = {n} | {head} |")
    print("|---" * (len(CASES) + 1) + "|")
    goals = {
        (fn, noise, s): trajectory(fn, {"name": "adam", "lr": 0.01}, 40, s, d, noise)[-1]
        for fn, noise in CASES
        for s in seeds
    }
    for label, extra in VARIANTS.items():
        cells = []
        for fn, noise in CASES:
            hits = []
            for s in seeds:
                losses = trajectory(fn, wrap("optex", n, **extra), 40, s, d, noise=noise)
                hits.append(first_hit(losses, goals[(fn, noise, s)]))
            cells.append(fmt_hits(hits))
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
