"""One local Ray instance (2 CPUs, no dashboard) for the whole test session."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

ray = pytest.importorskip("ray", reason="extra 'ray' not installed")

import _ray_helpers  # noqa: E402

pytestmark = pytest.mark.ray


@pytest.fixture(scope="session")
def ray_session() -> Iterator[Any]:
    """Start Ray once; the test helpers travel to the workers by value (they are not an
    installed module there)."""
    ray.cloudpickle.register_pickle_by_value(_ray_helpers)
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()
