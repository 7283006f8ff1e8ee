"""Checks for code that runs on a CUDA device."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch


def count_syncs(fn: Callable[[], Any]) -> int:
    """How many calls during one ``fn()`` synchronise the host with the CUDA device (counted
    with ``torch.cuda.set_sync_debug_mode("warn")``, which warns at each one). For asserting
    that a step stays asynchronous, e.g. ``assert count_syncs(step) <= 2``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)
