"""Synthetic test functions as optkit objectives (definitions as in BoTorch's test functions).

Each is ``f: R^d -> R`` on the params dict ``{"x": Tensor(d)}`` with a known optimum. The
``noise`` option makes gradients stochastic: each evaluation draws ``xi ~ N(0, noise^2 I_d)``
and the stochastic loss is ``f(x) + xi . x``, so its gradient is ``grad f(x) + xi`` (unbiased,
isotropic noise of standard deviation ``noise`` per coordinate). ``evaluate`` reports the
noise-free ``loss`` and ``gap = loss - optimum``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from optkit.errors import ConfigError
from optkit.interfaces import Objective, Params


class SyntheticFunction(Objective):
    """Base: subclasses set ``bounds`` (the usual search domain) and implement ``f``."""

    bounds: ClassVar[tuple[float, float]]
    vmappable: ClassVar[bool] = True
    graph_safe: ClassVar[bool] = True  # loss reads only its arguments and fixed data
    batch_size: ClassVar[int] = 1
    """One noise draw per gradient evaluation (:class:`optkit.interfaces.SizedBatches`)."""

    def __init__(
        self,
        *,
        dim: int = 2,
        noise: float = 0.0,
        init_low: float | None = None,
        init_high: float | None = None,
    ) -> None:
        """Args:
        dim: dimension d >= 1 (>= 2 for Rosenbrock).
        noise: standard deviation of the additive gradient noise (0: exact gradients).
        init_low / init_high: the initial point is uniform in ``[init_low, init_high]^d``;
            defaults to the function's usual domain ``bounds``.
        """
        if dim < self.min_dim():
            raise ConfigError(
                f"objective '{self.name}': dim must be >= {self.min_dim()}, got {dim}"
            )
        if noise < 0:
            raise ConfigError(f"objective '{self.name}': noise must be >= 0, got {noise}")
        self.dim = dim
        self.noise = noise
        self.stochastic = noise > 0
        self.init_low = self.bounds[0] if init_low is None else init_low
        self.init_high = self.bounds[1] if init_high is None else init_high
        if not self.init_low < self.init_high:
            raise ConfigError(
                f"objective '{self.name}': need init_low < init_high,"
                f" got {self.init_low} >= {self.init_high}"
            )
        self.optimum = self.optimum_value(dim)

    @classmethod
    def min_dim(cls) -> int:
        return 1

    def optimum_value(self, dim: int) -> float:
        return 0.0

    def f(self, x: torch.Tensor) -> torch.Tensor:
        """The function on one point ``x`` of shape ``(d,)``; returns a 0-dim tensor."""
        raise NotImplementedError

    def init_params(self, generator: torch.Generator) -> Params:
        u = torch.rand(self.dim, generator=generator, dtype=self.dtype, device=generator.device)
        x = self.init_low + (self.init_high - self.init_low) * u
        return {"x": x.to(self.device)}

    def sample_batch(self, generator: torch.Generator, params: Params) -> torch.Tensor | None:
        return self.sample_batch_of_size(generator, params, self.batch_size)

    def sample_batch_of_size(
        self, generator: torch.Generator, params: Params, size: int
    ) -> torch.Tensor | None:
        """The mean of ``size`` i.i.d. noise draws, ``N(0, noise^2 / size I_d)``, drawn as one
        scaled normal (:class:`optkit.interfaces.SizedBatches`; one draw is one example)."""
        if self.noise == 0:
            return None
        xi = torch.randn(self.dim, generator=generator, dtype=self.dtype, device=generator.device)
        scale = self.noise if size == 1 else self.noise / math.sqrt(size)
        return (scale * xi).to(self.device)

    def loss(self, params: Params, batch: torch.Tensor | None) -> torch.Tensor:
        x = params["x"]
        value = self.f(x)
        if batch is not None:
            value = value + (batch * x).sum()
        return value

    @torch.no_grad()
    def evaluate(self, params: Params) -> dict[str, float]:
        value = float(self.f(params["x"]))
        return {"loss": value, "gap": value - float(self.optimum or 0.0)}

    def metric_direction(self) -> dict[str, str]:
        return {"loss": "min", "gap": "min"}


class Sphere(SyntheticFunction):
    """The sphere function: convex, separable, the easiest case."""

    name: ClassVar[str] = "sphere"
    summary: ClassVar[str] = "sum x_i^2; optimum 0 at 0"
    bounds = (-5.12, 5.12)

    def f(self, x: torch.Tensor) -> torch.Tensor:
        return (x * x).sum()


class Ackley(SyntheticFunction):
    """Ackley: nearly flat outer region, many local minima, one deep global minimum at 0."""

    name: ClassVar[str] = "ackley"
    summary: ClassVar[str] = "Ackley (a=20, b=0.2, c=2 pi); optimum 0 at 0"
    bounds = (-32.768, 32.768)

    def f(self, x: torch.Tensor) -> torch.Tensor:
        a, b, c = 20.0, 0.2, 2 * math.pi
        part1 = -a * torch.exp(-b * torch.sqrt((x * x).mean() + 1e-30))
        part2 = -torch.exp(torch.cos(c * x).mean())
        return part1 + part2 + a + math.e


class Rosenbrock(SyntheticFunction):
    """Rosenbrock: a curved narrow valley; ill-conditioned, non-convex for d > 3."""

    name: ClassVar[str] = "rosenbrock"
    summary: ClassVar[str] = "sum 100 (x_{i+1} - x_i^2)^2 + (x_i - 1)^2; optimum 0 at 1"
    bounds = (-5.0, 10.0)

    @classmethod
    def min_dim(cls) -> int:
        return 2

    def f(self, x: torch.Tensor) -> torch.Tensor:
        return (100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (x[:-1] - 1.0) ** 2).sum()


class Rastrigin(SyntheticFunction):
    """Rastrigin: a sphere with a regular lattice of local minima."""

    name: ClassVar[str] = "rastrigin"
    summary: ClassVar[str] = "10 d + sum x_i^2 - 10 cos(2 pi x_i); optimum 0 at 0"
    bounds = (-5.12, 5.12)

    def f(self, x: torch.Tensor) -> torch.Tensor:
        return 10.0 * x.shape[0] + (x * x - 10.0 * torch.cos(2 * math.pi * x)).sum()


class Levy(SyntheticFunction):
    """Levy: many local minima; global minimum at 1."""

    name: ClassVar[str] = "levy"
    summary: ClassVar[str] = "Levy; optimum 0 at 1"
    bounds = (-10.0, 10.0)

    def f(self, x: torch.Tensor) -> torch.Tensor:
        w = 1.0 + (x - 1.0) / 4.0
        head = torch.sin(math.pi * w[0]) ** 2
        mid = ((w[:-1] - 1.0) ** 2 * (1.0 + 10.0 * torch.sin(math.pi * w[:-1] + 1.0) ** 2)).sum()
        tail = (w[-1] - 1.0) ** 2 * (1.0 + torch.sin(2 * math.pi * w[-1]) ** 2)
        return head + mid + tail


class StyblinskiTang(SyntheticFunction):
    """Styblinski-Tang: separable, one global minimum per coordinate at -2.9035."""

    name: ClassVar[str] = "styblinski_tang"
    summary: ClassVar[str] = "0.5 sum x^4 - 16 x^2 + 5 x; optimum -39.166 d at -2.9035"
    bounds = (-5.0, 5.0)

    def optimum_value(self, dim: int) -> float:
        return -39.16616570377142 * dim

    def f(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (x**4 - 16.0 * x**2 + 5.0 * x).sum()


FUNCTIONS: list[type[SyntheticFunction]] = [
    Sphere,
    Ackley,
    Rosenbrock,
    Rastrigin,
    Levy,
    StyblinskiTang,
]
