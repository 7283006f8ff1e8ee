"""Every closed-form kernel of the hot path equals the GPyTorch kernel it names."""

from __future__ import annotations

import pytest
import torch
from optkit_optex.kernels import KERNELS, evaluate_sq, gpytorch_kernel, kernel_spec

from optkit.errors import ConfigError

pytestmark = pytest.mark.optex  # compares against GPyTorch


@pytest.mark.parametrize("name", sorted(KERNELS))
@pytest.mark.parametrize("lengthscale", [0.3, 2.0])
def test_closed_form_equals_gpytorch(name: str, lengthscale: float) -> None:
    gen = torch.Generator().manual_seed(0)
    x1 = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    x2 = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    module = gpytorch_kernel(name).to(torch.float64)
    module.lengthscale = lengthscale
    with torch.no_grad():
        reference = module(x1, x2).to_dense()
    ours = evaluate_sq(name, torch.cdist(x1, x2) ** 2, float(module.lengthscale.detach()))
    torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-12)
    # k(x, x) = 1 (unit output scale)
    assert float(evaluate_sq(name, torch.zeros(1), lengthscale)) == pytest.approx(1.0)


def test_unknown_kernel_names_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown kernel 'laplace'.*matern52"):
        kernel_spec("laplace")
