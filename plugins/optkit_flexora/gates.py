"""One scalar gate per transformer layer on its LoRA deltas.

Gate forms (``gate_form``), from logits a of shape ``(L,)``:

* ``"softmax"`` (released): gate = L * softmax(a); the gates sum to L.
* ``"sigmoid"``: gate_i = 2 * sigmoid(a_i), independent per layer, in (0, 2).

Both are 1 at a = 0, so the search starts as plain LoRA. A forward hook on every ``lora_B``
module of layer i multiplies its output by a scale s_i, so the LoRA delta ``B A x * scaling``
of that layer is scaled exactly once; :func:`gate_scales` gives s = gate ** ``gate_power``.
The released Flexora code scales the delta three times through pre-hooks on dropout, A and B,
which is ``gate_power = 3``; ``gate_power = 1`` applies the gate once. The hooks read the scale
vector set by :meth:`LayerGates.applied`, so the loss stays differentiable w.r.t. the logits
(plain autograd or ``torch.func``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

from optkit.errors import ConfigError
from optkit_flexora.layers import LayerStack

GATE_FORMS: tuple[str, ...] = ("softmax", "sigmoid")
"""Documented gate forms (``docs/flexora.md``)."""
GATE_POWERS: tuple[int, ...] = (1, 3)
"""Documented gate powers: 1 (gate applied once) and 3 (as released: three pre-hooks)."""

GateFn = Callable[[torch.Tensor], torch.Tensor]
"""``logits (L,) -> per-layer scales (L,)`` applied to the LoRA deltas (differentiable)."""


def check_gate_options(form: str, power: int) -> None:
    """Raise :class:`ConfigError` for a gate form or power that is not documented."""
    if form not in GATE_FORMS:
        raise ConfigError(
            f"flexora: gate_form '{form}' is not a documented gate form; valid: 'softmax'"
            " (L x softmax(a), as released) or 'sigmoid' (2 x sigmoid(a_i) per layer)"
        )
    if isinstance(power, bool) or power not in GATE_POWERS:
        raise ConfigError(
            f"flexora: gate_power = {power!r} is not documented; valid: 1 (the gate scales"
            " each LoRA delta once) or 3 (as released: pre-hooks on dropout, A and B)"
        )


def gate_values(logits: torch.Tensor, form: str = "softmax") -> torch.Tensor:
    """Gates of shape ``(L,)`` from logits ``a`` of shape ``(L,)``: ``L * softmax(a)``
    (``form = "softmax"``) or ``2 * sigmoid(a)`` (``"sigmoid"``); both are 1 at a = 0."""
    if form == "softmax":
        return logits.shape[0] * torch.softmax(logits, dim=0)
    if form == "sigmoid":
        return 2.0 * torch.sigmoid(logits)
    raise ConfigError(f"unknown gate form '{form}'; valid: {', '.join(GATE_FORMS)}")


def gate_scales(form: str = "softmax", power: int = 1) -> GateFn:
    """The function ``a -> gate_values(a, form) ** power`` (shape ``(L,)`` to ``(L,)``): the
    factor each layer's LoRA delta is multiplied by."""
    check_gate_options(form, power)

    def scales(logits: torch.Tensor) -> torch.Tensor:
        gates = gate_values(logits, form)
        return gates if power == 1 else gates**power

    return scales


class LayerGates:
    """Hooks that scale each layer's LoRA deltas by one gate.

    Args:
        model: a PEFT model with vanilla LoRA adapters on the layers of ``stack``.
        stack: the model's layer stack (:func:`optkit_flexora.layers.discover_layers`).
        adapter: the PEFT adapter name.

    Raises:
        ConfigError: no LoRA module found, a DoRA/variant adapter (its delta is not a
            separate output), or a layer without any LoRA module.
    """

    def __init__(self, model: torch.nn.Module, stack: LayerStack, adapter: str = "default"):
        from peft.tuners.lora import LoraLayer

        self.stack = stack
        self.values: torch.Tensor | None = None
        self.handles: list[Any] = []
        self.modules_per_layer = [0] * stack.count
        for name, module in model.named_modules():
            if not isinstance(module, LoraLayer) or adapter not in module.lora_B:
                continue
            if adapter in getattr(module, "lora_variant", {}):
                raise ConfigError(
                    f"Flexora gates need vanilla LoRA; module '{name}' uses a LoRA variant"
                    " (DoRA?): set peft = 'lora' for the search"
                )
            index = stack.index_of(name)
            if index is None:
                continue
            self.modules_per_layer[index] += 1
            self.handles.append(module.lora_B[adapter].register_forward_hook(self._hook(index)))
        if not self.handles:
            raise ConfigError("Flexora gates: the model has no LoRA modules inside its layers")
        empty = [i for i, n in enumerate(self.modules_per_layer) if n == 0]
        if empty:
            self.remove()
            raise ConfigError(f"Flexora gates: layers {empty} have no LoRA module")

    def _hook(self, index: int) -> Any:
        def hook(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
            if self.values is None:
                return output
            return output * self.values[index].to(output.dtype)

        return hook

    @contextlib.contextmanager
    def applied(self, values: torch.Tensor | None) -> Iterator[None]:
        """Within the block, layer i's LoRA delta is multiplied by ``values[i]`` (shape
        ``(L,)``); ``None`` means no gating."""
        if values is not None and values.shape != (self.stack.count,):
            raise ValueError(f"gate values must have shape ({self.stack.count},)")
        previous, self.values = self.values, values
        try:
            yield
        finally:
            self.values = previous

    def set(self, values: torch.Tensor | None) -> None:
        """Gate values used until the next :meth:`set` (``None``: no gating)."""
        self.values = values

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
        self.values = None
