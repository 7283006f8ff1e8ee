"""Small image classifiers, used functionally: the params dict of an objective holds the
module's parameters and :func:`torch.func.functional_call` runs it (vmap-friendly: no batch
norm, no buffers, no data-dependent control flow)."""

from __future__ import annotations

import math

import torch
from torch import nn

from optkit.errors import ConfigError

MODELS = ("cnn", "mlp")
CNN_MIN_SIDE = 4
"""The CNN pools twice by 2x2, so it needs images of at least 4x4 pixels."""


def check_image_size(model: str, shape: tuple[int, int, int], where: str) -> None:
    """Raise ConfigError when ``model`` cannot take images of ``shape`` = (C, H, W)."""
    c, h, w = shape
    if min(c, h, w) < 1:
        raise ConfigError(f"{where}: empty image shape {shape}")
    if model == "cnn" and min(h, w) < CNN_MIN_SIDE:
        raise ConfigError(
            f"{where}: model 'cnn' needs images of at least {CNN_MIN_SIDE}x{CNN_MIN_SIDE} pixels"
            f" (two 2x2 poolings), got {h}x{w}; use a larger image_size or model 'mlp'"
        )


def build_model(model: str, shape: tuple[int, int, int], classes: int) -> nn.Module:
    """A classifier for images of ``shape`` = (C, H, W) with ``classes`` outputs.

    * ``cnn``: conv3x3(C->16) ReLU maxpool2, conv3x3(16->32) ReLU maxpool2, linear(->128) ReLU,
      linear(->classes);
    * ``mlp``: flatten, linear(C*H*W->256) ReLU, linear(256->128) ReLU, linear(->classes).

    Input ``(B, C, H, W)`` float, output logits ``(B, classes)``. Built on the meta device: the
    objective draws the values itself (seeded) and passes them via ``functional_call``.
    """
    c, h, w = shape
    with torch.device("meta"):
        if model == "cnn":
            return nn.Sequential(
                nn.Conv2d(c, 16, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(32 * (h // 4) * (w // 4), 128),
                nn.ReLU(),
                nn.Linear(128, classes),
            )
        if model == "mlp":
            return nn.Sequential(
                nn.Flatten(),
                nn.Linear(c * h * w, 256),
                nn.ReLU(),
                nn.Linear(256, 128),
                nn.ReLU(),
                nn.Linear(128, classes),
            )
    raise ConfigError(f"unknown model '{model}'; valid: {', '.join(MODELS)}")


def init_module_params(
    module: nn.Module,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
) -> dict[str, torch.Tensor]:
    """PyTorch's default initialization of Linear/Conv layers, drawn with ``generator``:
    weight and bias uniform in ``+-1/sqrt(fan_in)`` (what ``kaiming_uniform_(a=sqrt(5))``
    gives). Returns ``{parameter name: tensor}`` on ``device``."""
    params: dict[str, torch.Tensor] = {}
    fan_in: dict[str, int] = {}
    for name, p in module.named_parameters():
        prefix = name.rsplit(".", 1)[0]
        if name.endswith("weight"):
            fan_in[prefix] = math.prod(p.shape[1:])
    for name, p in module.named_parameters():
        bound = 1.0 / math.sqrt(fan_in[name.rsplit(".", 1)[0]])
        u = torch.rand(p.shape, generator=generator, device=generator.device, dtype=dtype)
        params[name] = ((2 * u - 1) * bound).to(device)
    return params
