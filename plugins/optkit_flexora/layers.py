"""Find the stack of transformer layers in any transformers model.

Llama/Mistral/Qwen keep their blocks in ``model.layers.<i>``, GPT-2 in ``transformer.h.<i>``,
BERT in ``encoder.layer.<i>``, T5 in ``encoder.block.<i>``. Rather than a list of names, the
stack is found structurally: the :class:`torch.nn.ModuleList` of identical blocks that holds the
most parameters. Its attribute name is PEFT's ``layers_pattern``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from optkit.errors import ConfigError


@dataclass(frozen=True)
class LayerStack:
    """The transformer blocks of a model.

    Attributes:
        path: dotted path of the ModuleList inside the model (``"model.layers"``).
        pattern: its last name (``"layers"``, ``"h"``, ``"layer"``): PEFT's ``layers_pattern``.
        count: number of blocks L (indices ``0 .. L-1``).
    """

    path: str
    pattern: str
    count: int

    def index_of(self, module_name: str) -> int | None:
        """Layer index of a (possibly PEFT-prefixed) module name, or ``None`` outside the
        stack: ``"base_model.model.model.layers.3.self_attn.q_proj"`` -> 3."""
        match = re.search(rf"(?:^|\.){re.escape(self.path)}\.(\d+)(?:\.|$)", module_name)
        return int(match.group(1)) if match else None


def discover_layers(model: torch.nn.Module) -> LayerStack:
    """The layer stack of ``model`` (a transformers model, optionally PEFT-wrapped).

    Raises:
        ConfigError: no ModuleList of identical blocks holding weight matrices (the message
            names the model class and what was looked for).
    """
    best: tuple[int, str] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.ModuleList) or len(module) == 0:
            continue
        blocks = list(module)
        if len({type(b) for b in blocks}) != 1:
            continue
        if not any(p.ndim == 2 for p in blocks[0].parameters()):  # Linear / GPT-2 Conv1D
            continue
        size = sum(p.numel() for p in module.parameters())
        if best is None or size > best[0]:
            best = (size, name)
    if best is None:
        raise ConfigError(
            f"no transformer layers found in {type(model).__name__}: looked for a ModuleList of"
            " identical blocks holding weight matrices (like Llama 'model.layers.<i>', GPT-2"
            " 'transformer.h.<i>', BERT 'encoder.layer.<i>')"
        )
    path = best[1]
    for prefix in ("base_model.model.",):  # PEFT wrapper: keep the inner model's path
        if path.startswith(prefix):
            path = path[len(prefix) :]
    stack = model.get_submodule(best[1])
    assert isinstance(stack, torch.nn.ModuleList)
    return LayerStack(path=path, pattern=path.rsplit(".", 1)[-1], count=len(stack))
