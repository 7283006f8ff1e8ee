"""The Zakharov function as an optkit objective."""

from __future__ import annotations

from typing import ClassVar

import torch

from optkit import Objective, Params


class Zakharov(Objective):
    """f(x) = sum x_i^2 + (sum 0.5 i x_i)^2 + (sum 0.5 i x_i)^4; optimum 0 at 0."""

    name: ClassVar[str] = "zakharov"
    summary: ClassVar[str] = "Zakharov function (example plugin); optimum 0 at 0"
    test_config: ClassVar[dict[str, int]] = {"dim": 4}

    def __init__(self, *, dim: int = 2, scale: float = 5.0) -> None:
        """Args:
        dim: dimension d.
        scale: the initial point is uniform in [-scale, scale]^d.
        """
        self.dim = dim
        self.scale = scale
        self.optimum = 0.0

    def init_params(self, generator: torch.Generator) -> Params:
        u = torch.rand(self.dim, generator=generator, dtype=self.dtype)
        return {"x": ((2 * u - 1) * self.scale).to(self.device)}

    def loss(self, params: Params, batch: None) -> torch.Tensor:
        x = params["x"]
        i = torch.arange(1, x.shape[0] + 1, dtype=x.dtype, device=x.device)
        s = (0.5 * i * x).sum()
        return (x * x).sum() + s**2 + s**4

    @torch.no_grad()
    def evaluate(self, params: Params) -> dict[str, float]:
        value = float(self.loss(params, None))
        return {"loss": value, "gap": value}

    def metric_direction(self) -> dict[str, str]:
        """Every metric :meth:`evaluate` reports, with its direction (``check`` reads it)."""
        return {"loss": "min", "gap": "min"}
