"""One parallel round of OptEx with its workers grouped by point.

A round evaluates ``W = P x K`` stochastic gradients: ``K = batches_per_point`` minibatch
gradients at each of the ``P`` points of the (possibly shortened) proxy trajectory. When the
trajectory stops early after ``s + 1 < P`` points (``stop_variance``), the workers of the
points that were not reached go to its last point, so every worker still evaluates one
gradient and the oracle counts exactly what ran (``grad_evals += W``). The gradients of one
point are averaged; their spread measures the gradient noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import torch

T = TypeVar("T")


def group_counts(points: int, parallelism: int, batches_per_point: int) -> list[int]:
    """Workers per point: ``batches_per_point`` each, the workers of the ``parallelism -
    points`` points not reached added to the last one. Sums to ``parallelism x
    batches_per_point``."""
    counts = [batches_per_point] * points
    counts[-1] += (parallelism - points) * batches_per_point
    return counts


def even_counts(points: int, workers: int) -> list[int]:
    """Workers per point when ``workers`` are shared out among ``points`` (``<= workers``):
    ``workers // points`` each, the remainder to the last. Sums to ``workers``."""
    counts = [workers // points] * points
    counts[-1] += workers - sum(counts)
    return counts


def expand(items: Sequence[T], counts: Sequence[int]) -> list[T]:
    """``items[i]`` repeated ``counts[i]`` times, in order."""
    return [item for item, c in zip(items, counts, strict=True) for _ in range(c)]


def group_mean(values: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
    """``(sum(counts), ...)`` -> ``(len(counts), ...)``: the mean of each consecutive group
    (``values`` itself when every group has one member)."""
    if all(c == 1 for c in counts):
        return values
    return torch.stack([chunk.mean(0) for chunk in torch.split(values, list(counts))])


def within_noise(values: torch.Tensor, counts: Sequence[int]) -> torch.Tensor | None:
    """Per-coordinate noise variance of the group means, from the spread inside the groups.

    Args:
        values: ``(sum(counts), m)`` the gradients (e.g. at a coordinate subsample), grouped
            consecutively by point.

    Returns:
        ``(1,)``: the pooled within-group variance (unbiased) times the mean of ``1 / c``
        over the groups (a group mean of ``c`` gradients has ``1 / c`` of their noise), or
        ``None`` when no group has two members.
    """
    if all(c < 2 for c in counts):
        return None
    ss = values.new_zeros(())
    dof = 0
    for chunk, c in zip(torch.split(values, list(counts)), counts, strict=True):
        if c >= 2:
            ss = ss + (chunk - chunk.mean(0)).square().sum(0).mean()
            dof += c - 1
    inv = sum(1.0 / c for c in counts) / len(counts)
    return (ss / dof * inv).reshape(1)
