"""Fair comparisons of methods over seeds: bootstrap intervals, targets, performance profiles.

One job per module:

* :mod:`~optkit.comparisons.bootstrap`: percentile-bootstrap CIs over seeds, paired or not;
* :mod:`~optkit.comparisons.measured`: the measured rows of a run directory, grouped;
* :mod:`~optkit.comparisons.targets`: per-seed targets and the first evaluation reaching them;
* :mod:`~optkit.comparisons.summary`: one comparison row per (objective, method);
* :mod:`~optkit.comparisons.table`: those rows as a readable table;
* :mod:`~optkit.comparisons.profile`: Dolan-Moré performance profiles over objectives.

numpy only (matplotlib lazily, for the figure); no plugin imports.
"""

from __future__ import annotations

from optkit.comparisons.bootstrap import Interval, bootstrap_mean, paired_bootstrap
from optkit.comparisons.summary import JSON_KEYS, Comparison, ComparisonRow, compare

__all__ = [
    "JSON_KEYS",
    "Comparison",
    "ComparisonRow",
    "Interval",
    "bootstrap_mean",
    "compare",
    "paired_bootstrap",
]
