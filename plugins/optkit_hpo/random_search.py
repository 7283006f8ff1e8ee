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

    The trials go to ``context.run_trials`` in batches of ``batch_size`` (default: the whole
    plan at once), so a launcher that runs trials in parallel (``--launcher ray``: one Ray
    task per trial) runs them side by side. The plan does not depend on any result, so the
    configurations, scores and choice are the same for every ``batch_size`` and launcher.
    """

    name: ClassVar[str] = "random_search"
    summary: ClassVar[str] = "uniform random search over a declared search space (baseline)"
    test_config: ClassVar[dict[str, Any]] = {
        "space": {"optimizer.lr": {"low": 1e-3, "high": 1.0, "log": True}},
        "trials": 3,
    }

    def __init__(
        self, *, space: dict[str, dict[str, Any]], trials: int = 20, batch_size: int | None = None
    ) -> None:
        """Args:
        space: the search space table (see :mod:`optkit_hpo.space` for its format).
        trials: number of trials, resumed ones included.
        batch_size: trials handed to the runner at once (``None``: all of them); a smaller
            batch bounds how many run in parallel, and changes no result.
        """
        self.where = f"hyperoptimizer '{self.name}'"
        validate_counts(self.where, trials=trials)
        if batch_size is not None:
            validate_counts(self.where, batch_size=batch_size)
        self.space = parse_space(space, self.where)
        self.trials = trials
        self.batch_size = batch_size

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
        todo = todo[: max(0, self.trials - len(book))]
        size = self.batch_size or max(1, len(todo))
        for start in range(0, len(todo), size):
            book.run_batch(todo[start : start + size])
        return book.result({})
