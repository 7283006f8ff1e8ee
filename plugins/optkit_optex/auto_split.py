"""``batches_per_point = "auto"``: the points x batches split of W workers from the measured
gradient noise scale.

The rule (issue 19, point 3): once a minibatch is past the critical batch size, a larger
batch stops paying, so the workers beyond it should go along the time axis. The critical
batch is about the simple noise scale ``B_simple = tr(Sigma) / |G|^2`` (McCandlish, Kaplan,
Amodei et al. 2018). So K, the minibatch gradients averaged at each point, is chosen so that
``K x batch ~ B_simple``, and the other ``P = W / K`` go along the trajectory.

Measurement: the first :data:`AUTO_ROUNDS` rounds are data-parallel rounds (P = 1, K = W:
all W workers at one point, as OptEx's own first round is anyway, with an empty history).
Each gives ``mean_i |g_i|^2`` (one worker's minibatch, size b) and ``|mean_i g_i|^2`` (the
mean, size W b); their averages over the rounds go to
:func:`optkit.diagnose.noise_scale.fit_noise_scale` (the estimator of ``optkit diagnose
noise``, McCandlish et al.'s appendix A: the line through the two sizes), with the batch
counted in workers' minibatches, so it returns ``B = B_simple / b`` directly and the
objective's batch size need not be known. K is the divisor of W nearest to B on a log scale:
B unresolved (``|G|^2`` not above the noise: noise-dominated) gives K = W, B <= 0 (no noise)
gives K = 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from optkit.diagnose.noise_scale import fit_noise_scale
from optkit_optex.config import divisors

AUTO_ROUNDS = 3
"""Data-parallel rounds that measure the noise scale before the split is chosen."""


def choose_batches_per_point(noise_scale: float, workers: int) -> int:
    """K for ``workers`` = W: the divisor of W nearest to ``noise_scale`` (``B_simple /
    batch``, in minibatches) on a log scale (the smaller one on a tie); W when it is not
    finite (unresolved: noise-dominated), 1 when it is <= 0 or NaN."""
    if math.isnan(noise_scale) or noise_scale <= 0:
        return 1
    if not math.isfinite(noise_scale):
        return workers
    target = math.log(noise_scale)
    return min(divisors(workers), key=lambda k: (abs(math.log(k) - target), k))


@dataclass
class NoiseMeter:
    """The measurement of :data:`AUTO_ROUNDS` data-parallel rounds of ``workers`` gradients.

    Attributes:
        small: ``mean_i |g_i|^2`` per round (one worker's minibatch).
        big: ``|mean_i g_i|^2`` per round (the mean of ``workers`` minibatches).
    """

    workers: int
    rounds: int = AUTO_ROUNDS
    small: list[float] = field(default_factory=list)
    big: list[float] = field(default_factory=list)

    @torch.no_grad()
    def add(self, grads: torch.Tensor) -> None:
        """One round's ``(W, d)`` gradients, all at one point (one host read)."""
        small = grads.square().sum(1).mean()
        big = grads.mean(0).square().sum()
        s, b = torch.stack([small, big]).double().tolist()
        self.small.append(s)
        self.big.append(b)

    @property
    def done(self) -> bool:
        return len(self.small) >= self.rounds

    def noise_scale(self) -> float:
        """``B_simple / batch`` from the rounds so far (in workers' minibatches; ``inf``:
        unresolved; NaN with one worker or no round, where nothing can be measured)."""
        if self.workers < 2 or not self.small:
            return math.nan
        fit = fit_noise_scale({1: self.small, self.workers: self.big}, resamples=0)
        return fit.b_simple
