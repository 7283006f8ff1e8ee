"""Random search: ``trials`` configurations drawn uniformly from the search space."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from optkit.interfaces import HyperContext, HyperOptimizer, HyperResult
from optkit_hpo.space import check_against_specs, parse_space
from optkit_hpo.trials import TrialBook, validate_counts


class RandomSearch(HyperOptimizer):
    """Uniform random search (log-uniform for ``log`` parameters, uniform over integers,
    choices and layer subsets; see :mod:`optkit_hpo.space`).

    The whole plan (``trials`` configurations) is drawn up front from a generator seeded with
    ``context.seed``, so the same seed gives the same configurations in the same order. On
    resume, planned configurations the interrupted run already completed are skipped (they
    count towards ``trials``); the others run.
    """

    name: ClassVar[str] = "random_search"
    summary: ClassVar[str] = "uniform random search over a declared search space (baseline)"
    test_config: ClassVar[dict[str, Any]] = {
        "space": {"optimizer.lr": {"low": 1e-3, "high": 1.0, "log": True}},
        "trials": 3,
    }

    def __init__(self, *, space: dict[str, dict[str, Any]], trials: int = 20) -> None:
        """Args:
        space: the search space table (see :mod:`optkit_hpo.space` for its format).
        trials: number of trials, resumed ones included.
        """
        self.where = f"hyperoptimizer '{self.name}'"
        validate_counts(self.where, trials=trials)
        self.space = parse_space(space, self.where)
        self.trials = trials

    def optimize(self, context: HyperContext) -> HyperResult:
        check_against_specs(
            self.space,
            context.objective_spec,
            context.optimizer_spec,
            self.where,
            context.run_context,
        )
        book = TrialBook(self.space, context, self.where)
        generator = torch.Generator().manual_seed(context.seed)
        plan = [self.space.decode(u) for u in self.space.sample(self.trials, generator)]
        todo = [config for config in plan if not book.take_resumed(config)]
        for config in todo[: max(0, self.trials - len(book))]:
            book.run(config)
        return book.result({})
