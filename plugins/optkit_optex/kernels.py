"""Scalar stationary kernels by name: the GPyTorch class that defines each one, and its
closed form as a function of the squared distance (the estimator's hot path).

Why two forms of one kernel: the estimator evaluates ``k`` on a ``1 x T0`` distance vector
N-1 times per iteration, where a GPyTorch module call (lazy tensors, parameter transforms)
costs more than the whole bandwidth-bound query at moderate ``d``. So the hot path applies the
closed form below to distances it computed itself, while GPyTorch's kernel class stays the
definition: :func:`gpytorch_kernel` builds it (used for marginal-likelihood fitting in
:mod:`optkit_optex.hyper`), and ``tests/optex/test_kernels.py`` checks that every closed form
equals the GPyTorch kernel's output. gpytorch is imported inside functions only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from optkit.errors import ConfigError


def _matern12(q: torch.Tensor) -> torch.Tensor:
    return torch.exp(-q.sqrt())


def _matern32(q: torch.Tensor) -> torch.Tensor:
    r = math.sqrt(3.0) * q.sqrt()
    return (1.0 + r) * torch.exp(-r)


def _matern52(q: torch.Tensor) -> torch.Tensor:
    r = math.sqrt(5.0) * q.sqrt()
    return (1.0 + r + r * r / 3.0) * torch.exp(-r)


def _rbf(q: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * q)


@dataclass(frozen=True)
class KernelSpec:
    """One kernel: its closed form ``k(q)`` with ``q = ||x - x'||^2 / lengthscale^2`` (unit
    output scale) and the GPyTorch class (by attribute name) plus keyword arguments that define
    the same function."""

    name: str
    closed_form: Callable[[torch.Tensor], torch.Tensor]
    gpytorch_class: str
    gpytorch_kwargs: dict[str, Any]


KERNELS: dict[str, KernelSpec] = {
    "matern52": KernelSpec("matern52", _matern52, "MaternKernel", {"nu": 2.5}),
    "matern32": KernelSpec("matern32", _matern32, "MaternKernel", {"nu": 1.5}),
    "matern12": KernelSpec("matern12", _matern12, "MaternKernel", {"nu": 0.5}),
    "rbf": KernelSpec("rbf", _rbf, "RBFKernel", {}),
}
"""Kernel names accepted by the ``kernel`` option (``matern52`` is the paper's default)."""


def kernel_spec(name: str) -> KernelSpec:
    """The spec for ``name``; :class:`ConfigError` listing the valid names otherwise."""
    spec = KERNELS.get(name)
    if spec is None:
        raise ConfigError(
            f"optimizer 'optex': unknown kernel '{name}'; valid kernels: {', '.join(KERNELS)}"
        )
    return spec


def gpytorch_kernel(name: str, lengthscale: float | None = None) -> Any:
    """The GPyTorch module for ``name`` (no output scale), lengthscale set when given."""
    import gpytorch

    spec = kernel_spec(name)
    module = getattr(gpytorch.kernels, spec.gpytorch_class)(**spec.gpytorch_kwargs)
    if lengthscale is not None:
        module.lengthscale = lengthscale
    return module


def evaluate_sq(
    name: str, sqdist: torch.Tensor, lengthscale: float, *, ls_sq: torch.Tensor | None = None
) -> torch.Tensor:
    """``k`` (unit output scale) on squared distances of any shape; same shape out.

    ``ls_sq``: the squared lengthscale as a tensor (a static buffer a CUDA graph reads)
    instead of ``lengthscale``; hold ``lengthscale ** 2`` rounded once from float64, as the
    float argument is.
    """
    scale = lengthscale * lengthscale if ls_sq is None else ls_sq
    return kernel_spec(name).closed_form(sqdist.clamp_min(0.0) / scale)
