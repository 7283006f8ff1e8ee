"""The Shakespeare character-level language model on the real text."""

from __future__ import annotations

import math

import pytest
import torch
from workload_helpers import run_steps, vmap_matches_serial

from optkit.errors import ConfigError
from optkit.registry import Registry

SMALL = {
    "name": "shakespeare",
    "context": 32,
    "width": 32,
    "layers": 1,
    "heads": 2,
    "batch_size": 16,
    "eval_windows": 16,
}


def test_corpus_and_split(registry: Registry) -> None:
    obj = registry.create("objective", SMALL)
    obj.prepare(torch.device("cpu"), torch.float32)
    n_train, n_held = obj.train_text.numel(), obj.held_text.numel()
    assert 4_000_000 < n_train + n_held < 6_000_000  # the 42 works, ~5 MB of text
    assert abs(n_held / (n_train + n_held) - 0.1) < 0.01
    assert 60 < len(obj.vocab) < 100 and "e" in obj.vocab
    text = "".join(obj.vocab[int(i)] for i in obj.train_text[:40])
    assert text.startswith("ALL'S WELL THAT ENDS WELL")  # the first work in file-name order


def test_trains_and_reports_both_losses(registry: Registry) -> None:
    _, _, _losses, before, after = run_steps(
        registry, SMALL, 40, optimizer={"name": "adam", "lr": 3e-3}, executor="vmap"
    )
    assert abs(before["loss"] - math.log(80)) < 0.8  # near uniform over the vocabulary
    assert after["train_loss"] < before["train_loss"] - 0.8
    assert after["heldout_loss"] < before["heldout_loss"] - 0.8
    assert after["loss"] == after["train_loss"]


def test_vmap_matches_serial(registry: Registry) -> None:
    obj = registry.create("objective", {**SMALL, "train_chars": 10_000})
    obj.prepare(torch.device("cpu"), torch.float32)
    assert obj.train_text.numel() == 10_000
    vmap_matches_serial(registry, obj)


def test_bad_config(registry: Registry) -> None:
    with pytest.raises(ConfigError, match=r"width 30 must be divisible by heads 4"):
        registry.create("objective", {"name": "shakespeare", "width": 30, "heads": 4})
    with pytest.raises(ConfigError, match=r"train_chars must be >= context \+ 1"):
        registry.create("objective", {"name": "shakespeare", "train_chars": 10})
