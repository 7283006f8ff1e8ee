"""The chunked Gram matrix of a few long rows against the plain product."""

from __future__ import annotations

import pytest
import torch
from optkit_optex.gram import row_gram

pytestmark = pytest.mark.optex


@pytest.mark.parametrize("d", [100, 64 * 4096, 64 * 4096 + 37, 1_000_003])
def test_row_gram_is_the_plain_product(d: int) -> None:
    a = torch.randn(8, d, generator=torch.Generator().manual_seed(d), dtype=torch.float64)
    torch.testing.assert_close(row_gram(a), a @ a.T, rtol=1e-12, atol=1e-9)


def test_row_gram_in_float32_leaves_its_input_and_matches_a_float64_product() -> None:
    a = torch.randn(3, 64 * 4096, generator=torch.Generator().manual_seed(0))
    before = a.clone()
    out = row_gram(a)
    assert torch.equal(a, before) and out.shape == (3, 3)
    torch.testing.assert_close(
        out, a.double() @ a.double().T, rtol=1e-4, atol=1e-2, check_dtype=False
    )
