"""A small functional MLP (pure tensor ops, vmap-friendly) for Q-values and policies."""

from __future__ import annotations

import itertools
import math

import torch

from optkit.interfaces import Params


def init_mlp(
    prefix: str,
    sizes: list[int],
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
) -> Params:
    """Parameters ``{prefix}{i}.weight`` ``(out, in)`` / ``{prefix}{i}.bias`` ``(out,)`` of
    an MLP with layer ``sizes`` [in, hidden..., out], uniform in ``+-1/sqrt(fan_in)`` (PyTorch's
    default for Linear), drawn with ``generator``."""
    params: Params = {}
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        bound = 1.0 / math.sqrt(fan_in)
        for key, shape in (("weight", (fan_out, fan_in)), ("bias", (fan_out,))):
            u = torch.rand(shape, generator=generator, device=generator.device, dtype=dtype)
            params[f"{prefix}{i}.{key}"] = ((2 * u - 1) * bound).to(device)
    return params


def mlp(params: Params, prefix: str, x: torch.Tensor, layers: int) -> torch.Tensor:
    """Apply the MLP ``prefix`` (``layers`` linear layers, ReLU between them) to ``x``
    of shape ``(..., in)``; returns ``(..., out)``."""
    for i in range(layers):
        x = x @ params[f"{prefix}{i}.weight"].T + params[f"{prefix}{i}.bias"]
        if i < layers - 1:
            x = torch.relu(x)
    return x
