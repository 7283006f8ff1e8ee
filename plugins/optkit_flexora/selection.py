"""Which layers keep LoRA after the search: rules on the gate logits a (shape ``(L,)``).

* ``positive_logit`` (released rule): layers with a_i > 0.
* ``gate_above_one``: layers whose gate exceeds 1. With the softmax form (L * softmax(a)_i)
  that is above the mean gate and, unlike a_i > 0, does not depend on the logits' common
  offset; with the sigmoid form (2 * sigmoid(a_i)) it is the same as a_i > 0.
* ``top_k``: the k layers with the largest logits (ties broken by the lower index).

An empty selection keeps the single layer with the largest logit (``fallback`` says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from optkit.errors import ConfigError, DivergenceError
from optkit_flexora.gates import gate_values

Rule = Literal["positive_logit", "top_k", "gate_above_one"]
RULES: tuple[str, ...] = ("positive_logit", "top_k", "gate_above_one")


@dataclass(frozen=True)
class Selection:
    """Selected layer indices (sorted) and whether the empty-selection fallback was used."""

    layers: list[int]
    fallback: bool = False


def check_top_k(rule: str, top_k: int | None, num_layers: int) -> None:
    """Validate ``top_k`` for ``rule`` against the model's ``num_layers`` (ConfigError)."""
    if rule not in RULES:
        raise ConfigError(f"unknown selection rule '{rule}'; valid: {', '.join(RULES)}")
    if rule == "top_k":
        if top_k is None:
            raise ConfigError("selection 'top_k' needs top_k (the number of layers to keep)")
        if not 1 <= top_k <= num_layers:
            raise ConfigError(
                f"top_k = {top_k} must be between 1 and the number of layers ({num_layers})"
            )


def select_layers(
    logits: torch.Tensor, rule: str, top_k: int | None = None, form: str = "softmax"
) -> Selection:
    """Apply ``rule`` to the gate logits ``a`` of shape ``(L,)`` (``form``: the gate form,
    see :func:`optkit_flexora.gates.gate_values`).

    Raises:
        DivergenceError: non-finite logits.
        ConfigError: unknown rule, bad ``top_k``.
    """
    a = logits.detach().float().cpu()
    if not bool(torch.isfinite(a).all()):
        raise DivergenceError(f"Flexora gate logits are not finite: {a.tolist()}")
    check_top_k(rule, top_k, a.shape[0])
    if rule == "top_k":
        assert top_k is not None
        order = sorted(range(a.shape[0]), key=lambda i: (-float(a[i]), i))
        return Selection(sorted(order[:top_k]))
    mask = a > 0 if rule == "positive_logit" else gate_values(a, form) > 1
    chosen = [int(i) for i in torch.nonzero(mask).flatten()]
    if not chosen:
        return Selection([int(torch.argmax(a))], fallback=True)
    return Selection(chosen)
