"""Gaussian-process Bayesian optimization with BoTorch over a declared search space.

Each round fits a ``SingleTaskGP`` (RBF kernel, BoTorch's default priors, ``Standardize``
outcome transform; options ``gp_prior`` and ``noise`` change the kernel prior and the noise
model) to every observed trial by maximizing the marginal likelihood (``fit_gpytorch_mll``),
then proposes ``batch_size`` points by sequential greedy optimization of
``qLogExpectedImprovement`` (``acquisition = "lognei"``: ``qLogNoisyExpectedImprovement``)
with ``optimize_acqf`` in the unit cube of the search space (:mod:`optkit_hpo.space`).
Discrete parameters:

* integers and layer selections are rounded by ``optimize_acqf``'s ``post_processing_func``
  (``SearchSpace.project``), so every candidate, and every pending point of the batch, is a
  canonical point of the space;
* categorical parameters are one-hot coordinates; with ``categorical = "enumerate"`` each
  joint choice is optimized separately (``optimize_acqf_mixed`` with one fixed-feature map per
  combination, at most ``MAX_ENUMERATED`` of them); with ``"relax"`` they are optimized as
  continuous coordinates and rounded to the arg-max like the integers. ``"auto"`` enumerates
  when there are at most ``MAX_ENUMERATED`` combinations.

The first ``initial_trials`` points are a scrambled Sobol design. Failed trials (``nan``
score) are given the worst finite score observed (``failures = "worst"``) or left out of the
model (``"exclude"``). Scores are minimized; the GP models ``-transform(score)``.

botorch and gpytorch are imported inside methods only, so listing plugins stays fast.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any, ClassVar, Literal

import torch

from optkit.errors import ConfigError
from optkit.interfaces import HyperContext, HyperOptimizer, HyperResult, Requirement
from optkit_hpo.space import CategoricalParam, check_against_specs, parse_space
from optkit_hpo.trials import TrialBook, validate_counts

MAX_ENUMERATED = 64
"""Most categorical combinations ``categorical = "enumerate"`` optimizes one by one."""
GLOBAL_RNG = threading.Lock()
"""Held while a proposal uses torch's global RNG (seeded per round): one at a time."""
EXACT_NOISE = 1e-5
"""Noise variance of the standardized scores with ``noise = "none"``."""


def transform_scores(scores: torch.Tensor, kind: str) -> torch.Tensor:
    """Monotone transform of scores ``(n,)`` before modeling (lower stays better).

    ``"rank"`` (default): Gaussian copula ``Phi^-1((rank + 1/2) / n)`` with tied scores
    sharing their mean rank; robust to outliers and to scores that span decades (diverging
    trials, losses of 1e4 next to 0.3), as used for hyperparameter optimization by Salinas
    et al. (2020). ``"log"``: ``log(s)`` when every score is positive, else
    ``log(s - min(s) + 0.01 (max(s) - min(s)))``. ``"none"``: unchanged.
    """
    if kind == "none" or scores.numel() == 0:
        return scores
    if kind == "log":
        low, high = float(scores.min()), float(scores.max())
        if low > 0:
            return scores.log()
        delta = 0.01 * (high - low) if high > low else 1.0
        return (scores - low + delta).log()
    values = scores.tolist()
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in order[start : end + 1]:
            ranks[i] = (start + end) / 2
        start = end + 1
    quantiles = (torch.tensor(ranks, dtype=scores.dtype) + 0.5) / len(values)
    return torch.distributions.Normal(0.0, 1.0).icdf(quantiles)


class BoTorchSearch(HyperOptimizer):
    """Bayesian optimization: SingleTaskGP + qLogExpectedImprovement, batches of q points."""

    requires: ClassVar[tuple[Requirement, ...]] = (Requirement("botorch", "bo"),)
    name: ClassVar[str] = "botorch"
    summary: ClassVar[str] = (
        "GP Bayesian optimization (BoTorch SingleTaskGP, qLogEI, Sobol start, q-batches)"
    )
    test_config: ClassVar[dict[str, Any]] = {
        "space": {"optimizer.lr": {"low": 1e-3, "high": 1.0, "log": True}},
        "trials": 4,
        "initial_trials": 2,
        "raw_samples": 32,
        "num_restarts": 2,
        "mc_samples": 32,
    }

    def __init__(
        self,
        *,
        space: dict[str, dict[str, Any]],
        trials: int = 20,
        batch_size: int = 1,
        initial_trials: int | None = None,
        failures: Literal["worst", "exclude"] = "worst",
        score_transform: Literal["rank", "log", "none"] = "rank",
        categorical: Literal["auto", "enumerate", "relax"] = "auto",
        max_dims: int = 64,
        num_restarts: int = 8,
        raw_samples: int = 256,
        mc_samples: int = 128,
        acquisition: Literal["logei", "lognei"] = "logei",
        noise: Literal["fitted", "none"] = "fitted",
        gp_prior: Literal["dim_scaled", "matern_gamma"] = "dim_scaled",
    ) -> None:
        """Args:
        space: the search space table (format: :mod:`optkit_hpo.space`).
        trials: number of trials, resumed ones and the Sobol design included.
        batch_size: q, the points proposed per round, handed to ``context.run_trials``
            together (in parallel under ``--launcher ray``; the Sobol design is one batch too).
        initial_trials: size of the Sobol design; default ``max(4, parameters + 1)``,
            at most ``trials`` (a small design leaves more trials to the GP; see
            ``docs/benchmarks/hpo.md``).
        failures: what the GP sees for a failed trial: the worst finite score, or nothing.
        score_transform: ``rank`` | ``log`` | ``none`` (see :func:`transform_scores`).
        categorical: how categorical parameters are optimized (module docstring).
        max_dims: the most unit-cube coordinates accepted (a GP on more is not sensible).
        num_restarts / raw_samples: ``optimize_acqf``'s multi-start settings.
        mc_samples: quasi-Monte-Carlo samples of the acquisition function.
        acquisition: ``logei`` (qLogExpectedImprovement over the best observed value) or
            ``lognei`` (qLogNoisyExpectedImprovement: integrates over the GP's posterior at
            the observed points, for noisy scores).
        noise: ``fitted`` (a Gaussian likelihood whose noise is fitted with the kernel) or
            ``none`` (the scores are treated as exact: a fixed noise variance of ``1e-5``
            on the standardized scale, for deterministic trials).
        gp_prior: ``dim_scaled`` (BoTorch's default: RBF kernel, LogNormal lengthscale prior
            scaled with the dimension, Hvarfner et al. 2024) or ``matern_gamma`` (BoTorch's
            earlier default: Matern-5/2 in a ScaleKernel, Gamma(3, 6) lengthscale prior
            (mean 0.5 of the unit cube), Gamma noise prior).
        """
        self.where = f"hyperoptimizer '{self.name}'"
        validate_counts(
            self.where,
            trials=trials,
            batch_size=batch_size,
            max_dims=max_dims,
            num_restarts=num_restarts,
            raw_samples=raw_samples,
            mc_samples=mc_samples,
        )
        self.space = parse_space(space, self.where)
        if initial_trials is None:
            initial_trials = min(trials, max(4, len(self.space.params) + 1))
        if not 1 <= initial_trials <= trials:
            raise ConfigError(
                f"{self.where}: 'initial_trials' must be in [1, trials = {trials}],"
                f" got {initial_trials}"
            )
        if self.space.dims > max_dims:
            widths = ", ".join(f"'{p.key}': {p.width}" for p in self.space.params)
            raise ConfigError(
                f"{self.where}: the search space has {self.space.dims} unit-cube dimensions"
                f" ({widths}), more than max_dims = {max_dims} that a GP model handles"
                " sensibly; use 'random_search', choose k of L layers in fewer layers, or"
                " raise max_dims"
            )
        combos = self.space.categorical_combinations()
        has_categorical = bool(self.space.of_type(CategoricalParam))
        if categorical == "enumerate" and combos > MAX_ENUMERATED:
            raise ConfigError(
                f"{self.where}: categorical = 'enumerate' would optimize {combos} combinations"
                f" of choices one by one (at most {MAX_ENUMERATED}); use categorical = 'relax'"
                " or fewer choices"
            )
        self.enumerate = has_categorical and (
            categorical == "enumerate" or (categorical == "auto" and combos <= MAX_ENUMERATED)
        )
        self.trials, self.batch_size, self.initial_trials = trials, batch_size, initial_trials
        self.failures, self.score_transform = failures, score_transform
        self.num_restarts, self.raw_samples, self.mc_samples = (
            num_restarts,
            raw_samples,
            mc_samples,
        )
        self.acquisition = acquisition
        self.noise, self.gp_prior = noise, gp_prior

    # ---------------------------------------------------------------------------------------

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
        replaced = [0]

        def fresh(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
            """Replace configs already tried (or repeated in the batch) by unseen random ones."""
            out: list[dict[str, Any]] = []
            for config in configs:
                tries = 0
                while (book.seen(config) or config in out) and tries < 64:
                    config = self.space.decode(self.space.sample(1, generator)[0])
                    tries += 1
                replaced[0] += tries > 0
                out.append(config)
            return out

        # 1. Sobol design (skipping points an interrupted run already completed).
        engine = torch.quasirandom.SobolEngine(self.space.dims, scramble=True, seed=context.seed)
        design = [self.space.decode(u) for u in engine.draw(self.initial_trials).double()]
        design = [c for c in design if not book.take_resumed(c)]
        design = fresh(design[: max(0, self.initial_trials - len(book))])
        book.run_batch(design)  # one batch: in parallel where the launcher can

        # 2. BO rounds of q points.
        fit_times: list[float] = []
        acq_times: list[float] = []
        rounds = 0
        while len(book) < self.trials:
            q = min(self.batch_size, self.trials - len(book))
            x, y = book.observations(self.failures)
            seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
            if x.shape[0] < 2:
                candidates = self.space.sample(q, generator)
                fit_s = acq_s = 0.0
                phase = "random"
            else:
                candidates, fit_s, acq_s = self.suggest(x, y, q, seed)
                phase = "bo"
            configs = fresh([self.space.decode(u) for u in candidates])
            fit_times.append(fit_s)
            acq_times.append(acq_s)
            context.record(
                {
                    "hpo_event": "round",
                    "round": rounds,
                    "phase": phase,
                    "n_train": int(x.shape[0]),
                    "q": q,
                    "fit_s": fit_s,
                    "acq_s": acq_s,
                }
            )
            rounds += 1
            book.run_batch(configs)
        return book.result(
            {
                "initial_trials": self.initial_trials,
                "bo_rounds": rounds,
                "fit_s": sum(fit_times),
                "acq_s": sum(acq_times),
                "duplicates_replaced": replaced[0],
            }
        )

    def suggest(
        self, x: torch.Tensor, scores: torch.Tensor, q: int, seed: int
    ) -> tuple[torch.Tensor, float, float]:
        """Fit the GP to points ``x`` ``(n, D)`` with ``scores`` ``(n,)`` and propose ``q``
        canonical points ``(q, D)``. Returns them with the fit and acquisition seconds.

        BoTorch's random draws (restarts, initial conditions) run under a forked global RNG
        seeded with ``seed``, so the proposal is deterministic and outside state untouched.
        The global RNG is one per process, so proposals of searches running side by side in
        threads (``--launcher ray`` runs searches in threads of the driver) take turns
        (:data:`GLOBAL_RNG`).
        """
        from botorch.acquisition.logei import (
            qLogExpectedImprovement,
            qLogNoisyExpectedImprovement,
        )
        from botorch.acquisition.monte_carlo import SampleReducingMCAcquisitionFunction
        from botorch.fit import fit_gpytorch_mll
        from botorch.models import SingleTaskGP
        from botorch.models.transforms.outcome import Standardize
        from botorch.optim import optimize_acqf, optimize_acqf_mixed
        from botorch.sampling.normal import SobolQMCNormalSampler
        from gpytorch.mlls import ExactMarginalLogLikelihood

        with GLOBAL_RNG, torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            start = time.perf_counter()
            train_y = -transform_scores(scores, self.score_transform).unsqueeze(-1)
            model = SingleTaskGP(
                x,
                train_y,
                train_Yvar=self.exact_noise(train_y) if self.noise == "none" else None,
                outcome_transform=Standardize(m=1),
                **self.prior_modules(),
            )
            fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
            fit_s = time.perf_counter() - start

            start = time.perf_counter()
            sampler = SobolQMCNormalSampler(torch.Size([self.mc_samples]), seed=seed)
            acqf: SampleReducingMCAcquisitionFunction
            if self.acquisition == "lognei":
                acqf = qLogNoisyExpectedImprovement(model, X_baseline=x, sampler=sampler)
            else:
                acqf = qLogExpectedImprovement(model, best_f=train_y.max(), sampler=sampler)
            bounds = torch.stack([torch.zeros(self.space.dims), torch.ones(self.space.dims)])
            common: dict[str, Any] = {
                "acq_function": acqf,
                "bounds": bounds.double(),
                "q": q,
                "num_restarts": self.num_restarts,
                "raw_samples": self.raw_samples,
                "post_processing_func": self.space.project,
                "options": {"seed": seed, "maxiter": 200, "batch_limit": 64},
            }
            if self.enumerate:
                candidates, _ = optimize_acqf_mixed(
                    fixed_features_list=self.fixed_features(), **common
                )
            else:
                candidates, _ = optimize_acqf(sequential=True, **common)
            acq_s = time.perf_counter() - start
        return candidates.detach().reshape(q, self.space.dims), fit_s, acq_s

    @staticmethod
    def exact_noise(train_y: torch.Tensor) -> torch.Tensor:
        """Noise variances ``(n, 1)`` for ``noise = "none"``: ``EXACT_NOISE`` times the
        variance of ``train_y`` ``(n, 1)``, i.e. ``EXACT_NOISE`` after ``Standardize``."""
        var = float(train_y.var()) if train_y.numel() > 1 else 0.0
        return torch.full_like(train_y, EXACT_NOISE * (var if var > 0 else 1.0))

    def prior_modules(self) -> dict[str, Any]:
        """``SingleTaskGP`` keyword arguments of ``gp_prior`` (none: BoTorch's defaults)."""
        if self.gp_prior == "dim_scaled":
            return {}
        from botorch.models.utils.gpytorch_modules import (
            get_gaussian_likelihood_with_gamma_prior,
            get_matern_kernel_with_gamma_prior,
        )

        modules: dict[str, Any] = {
            "covar_module": get_matern_kernel_with_gamma_prior(self.space.dims)
        }
        if self.noise == "fitted":
            modules["likelihood"] = get_gaussian_likelihood_with_gamma_prior()
        return modules

    def fixed_features(self) -> list[dict[int, float]]:
        """One ``{coordinate: 0/1}`` map per joint choice of the categorical parameters."""
        groups = []
        for _param, cols in self.space.of_type(CategoricalParam):
            dims = list(range(cols.start, cols.stop))
            groups.append([{d: float(d == chosen) for d in dims} for chosen in dims])
        return [
            {k: v for part in combo for k, v in part.items()}
            for combo in itertools.product(*groups)
        ]
