"""Squared norms of per-minibatch gradients at a fixed point, batched with ``torch.func``.

For a batch size ``b``, ``draws`` independent minibatches are drawn with the objective's
:meth:`~optkit.interfaces.SizedBatches.sample_batch_of_size`; their gradients come from one
``vmap(grad(objective.loss))`` call per chunk (vmappable objectives) or a loop of
``torch.func.grad`` calls, and only each gradient's squared norm is kept.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.func import grad, vmap

from optkit.executors import stack_batches
from optkit.interfaces import Objective, Params, SizedBatches

EXAMPLES_PER_CALL = 4096
"""Upper bound on ``chunk * b`` examples per vmapped call (memory of the activations)."""


def _sq_norm(grads: Params, batched: bool) -> torch.Tensor:
    """Squared Euclidean norm over all leaves, in float64: ``(chunk,)`` if ``batched``."""
    total = None
    for g in grads.values():
        flat = g.detach().to(torch.float64)
        flat = flat.reshape(flat.shape[0], -1) if batched else flat.reshape(1, -1)
        part = (flat * flat).sum(dim=1)
        total = part if total is None else total + part
    assert total is not None
    return total


def minibatch_sq_norms(
    objective: Objective,
    params: Params,
    generator: torch.Generator,
    size: int,
    draws: int,
) -> np.ndarray:
    """``|G_b|^2`` for ``draws`` independent minibatches of ``size`` at ``params``.

    Args:
        objective: a prepared objective implementing :class:`~optkit.interfaces.SizedBatches`.
        params: the point (not modified).
        generator: draws the minibatches (advanced).

    Returns:
        Shape ``(draws,)``, float64.
    """
    if not isinstance(objective, SizedBatches):
        raise TypeError(f"objective '{objective.name}' does not implement SizedBatches")
    point = {k: v.detach() for k, v in params.items()}
    grad_fn = grad(objective.loss)
    out: list[torch.Tensor] = []
    chunk = max(1, min(draws, EXAMPLES_PER_CALL // size))
    done = 0
    while done < draws:
        n = min(chunk, draws - done)
        batches = [objective.sample_batch_of_size(generator, point, size) for _ in range(n)]
        if objective.vmappable and n > 1:
            grads = vmap(grad_fn, in_dims=(None, 0))(point, stack_batches(batches))
            out.append(_sq_norm(grads, batched=True))
        else:
            out.extend(_sq_norm(grad_fn(point, b), batched=False) for b in batches)
        done += n
    return torch.cat(out).cpu().numpy()
