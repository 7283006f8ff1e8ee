"""Trial bookkeeping shared by the black-box hyperoptimizers: resume, failures, best config."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import torch

from optkit.errors import ConfigError
from optkit.interfaces import HyperContext, HyperResult, TrialResult
from optkit_hpo.space import SearchSpace, config_key


def failed(trial: TrialResult) -> bool:
    """A trial failed when its score is not finite (``nan`` + error, or a diverged ``inf``)."""
    return not math.isfinite(trial.score)


class TrialBook:
    """All trials of one search, the resumed ones (``context.completed``) first.

    Attributes:
        trials: every trial, resumed and new, in order.
        points: their canonical cube points, shape ``(dims,)`` each.
        resumed: how many came from ``context.completed``.
    """

    def __init__(self, space: SearchSpace, context: HyperContext, where: str) -> None:
        self.space = space
        self.context = context
        self.where = where
        self.trials: list[TrialResult] = []
        self.points: list[torch.Tensor] = []
        for i, trial in enumerate(context.completed):
            try:
                point = space.encode(trial.config)
            except ConfigError as exc:
                raise ConfigError(
                    f"{where}: completed trial {i} of the interrupted run does not fit the"
                    f" search space ({exc}); the task's space changed since that run: start"
                    " a fresh run directory"
                ) from exc
            self.trials.append(trial)
            self.points.append(point)
        self.resumed = len(self.trials)
        self._unreplayed = Counter(config_key(t.config) for t in self.trials)

    def __len__(self) -> int:
        return len(self.trials)

    @property
    def n_failed(self) -> int:
        return sum(failed(t) for t in self.trials)

    def seen(self, config: Mapping[str, Any]) -> bool:
        """Whether ``config`` was already tried (resumed or new)."""
        return any(config_key(t.config) == config_key(config) for t in self.trials)

    def take_resumed(self, config: Mapping[str, Any]) -> bool:
        """``True`` (once per resumed trial) when ``config`` is one the interrupted run
        already completed: a deterministic plan skips it instead of running it again."""
        key = config_key(config)
        if self._unreplayed[key] > 0:
            self._unreplayed[key] -= 1
            return True
        return False

    def run(self, config: dict[str, Any]) -> TrialResult:
        """Run one trial through ``context.run_trial``; a trial that raises is recorded as
        failed (score ``nan``, the error message) and the search goes on."""
        start = time.perf_counter()
        try:
            result = self.context.run_trial(config)
        except Exception as exc:  # a failed trial, not a crash: recorded, the search goes on
            error = f"{type(exc).__name__}: {exc}"
            result = TrialResult(dict(config), float("nan"), {}, error, time.perf_counter() - start)
            self.context.record(
                {"hpo_event": "trial_raised", "trial": len(self.trials), "error": error}
            )
        self._add(config, result)
        return result

    def run_batch(self, configs: list[dict[str, Any]]) -> list[TrialResult]:
        """Run several trials at once through ``context.run_trials`` (in parallel where the
        launcher can; ``run_trial`` in a loop otherwise), recorded in ``configs``' order. The
        same results as :meth:`run` on each in turn: without a batch path it *is* that loop;
        with one, a batch that raises records each of its trials as failed with that error
        and the search goes on."""
        if self.context.run_batch is None:
            return [self.run(config) for config in configs]
        start = time.perf_counter()
        try:
            results = self.context.run_trials(configs)
        except Exception as exc:  # a failed batch, not a crash: its trials fail
            error = f"{type(exc).__name__}: {exc}"
            elapsed = time.perf_counter() - start
            results = [TrialResult(dict(c), float("nan"), {}, error, elapsed) for c in configs]
            self.context.record(
                {"hpo_event": "batch_raised", "trials": len(configs), "error": error}
            )
        for config, result in zip(configs, results, strict=True):
            self._add(config, result)
        return results

    def _add(self, config: dict[str, Any], result: TrialResult) -> None:
        if not result.config:
            result.config = dict(config)
        if failed(result) and result.error is None:
            result.error = f"non-finite score {result.score}"
        self.trials.append(result)
        self.points.append(self.space.encode(config))

    def observations(self, failures: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Training data for a surrogate: points ``(n, dims)`` and scores ``(n,)`` float64.

        ``failures = "worst"`` imputes the worst (largest) finite score to failed trials,
        so the model learns to avoid their region; ``"exclude"`` drops them. Failed trials
        are dropped either way while no trial has succeeded.
        """
        scores = [t.score for t in self.trials]
        finite = [s for s in scores if math.isfinite(s)]
        keep_x, keep_y = [], []
        for point, score in zip(self.points, scores, strict=True):
            if math.isfinite(score):
                keep_x.append(point)
                keep_y.append(score)
            elif failures == "worst" and finite:
                keep_x.append(point)
                keep_y.append(max(finite))
        if not keep_x:
            empty = torch.zeros(0, self.space.dims, dtype=torch.float64)
            return empty, torch.zeros(0, dtype=torch.float64)
        return torch.stack(keep_x), torch.tensor(keep_y, dtype=torch.float64)

    def result(self, extras: dict[str, Any]) -> HyperResult:
        """The best successful trial (the first one on ties); ``best_score = nan`` and an
        empty ``best_config`` when every trial failed (``extras['all_failed'] = 1``)."""
        ok = [t for t in self.trials if not failed(t)]
        extras = {
            "trials_resumed": self.resumed,
            "trials_failed": self.n_failed,
            **extras,
        }
        if not ok:
            first = next((t.error for t in self.trials if t.error), "no trials")
            extras["all_failed"] = 1
            extras["first_error"] = str(first)
            return HyperResult({}, float("nan"), list(self.trials), extras)
        best = min(ok, key=lambda t: t.score)
        return HyperResult(dict(best.config), float(best.score), list(self.trials), extras)


def validate_counts(where: str, **counts: int) -> None:
    """ConfigError naming ``where`` unless every count is >= 1."""
    for name, value in counts.items():
        if value < 1:
            raise ConfigError(f"{where}: '{name}' must be >= 1, got {value}")
