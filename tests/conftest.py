"""Shared test set-up: one CPU thread (steady on 2-core machines), deterministic algorithms."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect (not skip) the ``gpu`` tests where there is no CUDA device: CI has none; the
    GPU machine runs them (see ``tests/optex/test_cuda.py``)."""
    if torch.cuda.is_available():
        return
    gpu = [item for item in items if item.get_closest_marker("gpu") is not None]
    if gpu:
        config.hook.pytest_deselected(items=gpu)
        items[:] = [item for item in items if item.get_closest_marker("gpu") is None]
