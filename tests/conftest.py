"""Shared test set-up: one CPU thread (steady on 2-core machines), deterministic algorithms."""

from __future__ import annotations

import torch

torch.set_num_threads(1)
