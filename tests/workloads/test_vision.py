"""Vision objectives on the real image sets (MNIST 5k, Fashion-MNIST, CIFAR-10 10k), on CPU."""

from __future__ import annotations

import pytest
import torch
from workload_helpers import run_steps, vmap_matches_serial

from optkit.errors import ConfigError
from optkit.registry import Registry

pytestmark = pytest.mark.vision


@pytest.mark.parametrize("model", ["cnn", "mlp"])
def test_mnist_trains(registry: Registry, model: str) -> None:
    obj, _, _losses, before, after = run_steps(
        registry,
        {"name": "mnist", "model": model, "batch_size": 32, "eval_train_size": 300},
        30,
        optimizer={"name": "adam", "lr": 3e-3},
    )
    assert obj.x_train.shape == (4000, 1, 28, 28) and obj.x_test.shape == (1000, 1, 28, 28)
    assert obj.x_train.dtype == torch.uint8
    assert before["test_error"] > 0.6  # an untrained 10-way classifier
    assert after["loss"] < before["loss"] - 1.0
    assert after["test_error"] < 0.4
    assert set(after) == {"loss", "test_error", "train_loss"}


def test_mnist_vmap_matches_serial_and_is_seeded(registry: Registry) -> None:
    obj = registry.create("objective", {"name": "mnist", "batch_size": 16})
    obj.prepare(torch.device("cpu"), torch.float32)
    vmap_matches_serial(registry, obj)
    a = obj.init_params(torch.Generator().manual_seed(3))
    b = obj.init_params(torch.Generator().manual_seed(3))
    c = obj.init_params(torch.Generator().manual_seed(4))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["0.weight"], c["0.weight"])
    idx = obj.sample_batch(torch.Generator().manual_seed(0), a)
    assert idx.shape == (16,) and idx.dtype == torch.int64


def test_fashion_mnist_full_set(registry: Registry) -> None:
    obj, _, _, before, after = run_steps(
        registry,
        {"name": "fashion_mnist", "model": "mlp", "batch_size": 64},
        25,
        optimizer={"name": "adam", "lr": 2e-3},
    )
    assert obj.x_train.shape == (60000, 1, 28, 28) and obj.x_test.shape == (10000, 1, 28, 28)
    assert sorted(torch.bincount(obj.y_test).tolist()) == [1000] * 10
    assert after["test_error"] < before["test_error"] - 0.3


def test_fashion_mnist_cnn_on_a_subset(registry: Registry) -> None:
    """The vision study's model (a CNN) on the vision study's data, 2,000 training images."""
    obj, _, _, before, after = run_steps(
        registry,
        {
            "name": "fashion_mnist",
            "model": "cnn",
            "batch_size": 32,
            "train_size": 2000,
            "eval_train_size": 100,
        },
        20,
        optimizer={"name": "adam", "lr": 2e-3},
    )
    assert obj.x_train.shape == (2000, 1, 28, 28) and obj.x_test.shape == (10000, 1, 28, 28)
    assert after["loss"] < before["loss"]


def test_resize_option(registry: Registry) -> None:
    obj = registry.create("objective", {"name": "mnist", "image_size": 14, "batch_size": 8})
    obj.prepare(torch.device("cpu"), torch.float32)
    assert obj.x_train.shape[2:] == (14, 14)
    params = obj.init_params(torch.Generator().manual_seed(0))
    assert torch.isfinite(obj.loss(params, obj.sample_batch(torch.Generator(), params)))


def test_bad_config_is_a_clear_error(registry: Registry) -> None:
    with pytest.raises(ConfigError, match=r"model 'cnn' needs images of at least 4x4.*got 3x3"):
        registry.create("objective", {"name": "mnist", "model": "cnn", "image_size": 3})
    with pytest.raises(ConfigError, match=r"unknown model 'resnet'; valid: cnn, mlp"):
        registry.create("objective", {"name": "cifar10", "model": "resnet"})
    with pytest.raises(ConfigError, match=r"batch_size must be >= 1"):
        registry.create("objective", {"name": "mnist", "batch_size": 0})
    obj = registry.create("objective", {"name": "mnist", "train_size": 10**6})
    with pytest.raises(ConfigError, match=r"train_size 1000000 exceeds the 4000 training"):
        obj.prepare(torch.device("cpu"), torch.float32)
