"""One scalar gate per transformer layer on its LoRA deltas: gate = L * softmax(a).

A forward hook on every ``lora_B`` module of layer i multiplies its output by gate_i, so the
LoRA delta ``B A x * scaling`` of that layer is scaled exactly once (the released Flexora code
scales it three times through pre-hooks on dropout, A and B). With logits a = 0 every gate is 1
and the model is plain LoRA. The hooks read the gate vector set by :meth:`LayerGates.applied`,
so the loss stays differentiable w.r.t. the logits (plain autograd or ``torch.func``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from optkit.errors import ConfigError
from optkit_flexora.layers import LayerStack


def gate_values(logits: torch.Tensor) -> torch.Tensor:
    """Gates ``L * softmax(a)`` of shape ``(L,)`` from logits ``a`` of shape ``(L,)``."""
    return logits.shape[0] * torch.softmax(logits, dim=0)


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
