"""Checks for code that runs on a CUDA device."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

SYNC_WARNING = "called a synchronizing CUDA operation"
"""The text of the warning that ``set_sync_debug_mode("warn")`` gives at each sync."""


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
    # one warning per synchronising call; torch also warns (once per process) that the debug
    # mode "does not yet detect all synchronizing operations", which is not a sync
    return sum(SYNC_WARNING in str(w.message) for w in caught)
