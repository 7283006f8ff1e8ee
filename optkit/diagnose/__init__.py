"""Diagnostics of a task's training regime (``optkit diagnose ...``).

* :mod:`~optkit.diagnose.noise_scale`: the gradient noise scale ``B_simple`` estimator;
* :mod:`~optkit.diagnose.gradients`: squared norms of per-minibatch gradients (``torch.func``);
* :mod:`~optkit.diagnose.noise`: ``optkit diagnose noise TASK.toml`` over a task's objectives.
"""

from __future__ import annotations

from optkit.diagnose.noise_scale import NoiseScale, fit_noise_scale

__all__ = ["NoiseScale", "fit_noise_scale"]
