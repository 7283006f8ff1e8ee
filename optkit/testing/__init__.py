"""Contract test kits for plugin authors (as ``optuna.testing`` ships its sampler tests).

Use them from your own test suite::

    from optkit.testing import check_hyperoptimizer, check_objective, check_optimizer
    def test_my_objective():
        check_objective(MyObjective(dim=3))

or subclass the pytest-style kits in :mod:`optkit.testing.kits`. optkit's own suite runs these
checks over every registered plugin.
"""

from optkit.testing.cuda import count_syncs
from optkit.testing.hyper import check_hyperoptimizer
from optkit.testing.kits import (
    check_executor,
    check_objective,
    check_optimizer,
    example_config,
    reference_objective,
)
from optkit.testing.networks import GPU_STUDY_NETWORKS
from optkit.testing.timing import TimedOracle

__all__ = [
    "GPU_STUDY_NETWORKS",
    "TimedOracle",
    "check_executor",
    "check_hyperoptimizer",
    "check_objective",
    "check_optimizer",
    "count_syncs",
    "example_config",
    "reference_objective",
]
