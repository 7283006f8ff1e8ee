"""Tensors <-> numpy arrays for Ray's object store, and byte counting.

Ray stores numpy arrays zero-copy (pickle protocol 5 out-of-band buffers in the shared-memory
object store; a reader on the same node maps them without a copy), whereas a ``torch.Tensor``
is pickled by value. So every tensor travels as a numpy array: on CPU ``tensor.numpy()`` is a
view (no copy), on GPU one device-to-host copy. dtypes numpy lacks (bfloat16, float8) travel
as same-width integer views and are viewed back on arrival.

Measured on a 2-core CPU (Ray 2.60, 10M float32): ``ray.put`` of the tensor 59 ms and of its
numpy view 13 ms; reading it in an actor 40 ms versus 2 ms.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils import _pytree as pytree

_INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


@dataclass(frozen=True)
class Viewed:
    """An array that holds a tensor of a dtype numpy lacks, as integers of the same width."""

    array: np.ndarray
    dtype: str


def encode(tensor: torch.Tensor) -> np.ndarray | Viewed:
    """A tensor (any device) -> a numpy array on the host (a view when it is already there)."""
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    try:
        return t.numpy()
    except TypeError:  # bfloat16 and friends
        view = t.view(_INT_VIEW[t.element_size()])
        return Viewed(view.numpy(), str(t.dtype).removeprefix("torch."))


def decode(item: np.ndarray | Viewed, device: torch.device, *, copy: bool) -> torch.Tensor:
    """Inverse of :func:`encode`, on ``device``.

    Arrays read from the object store are read-only; ``copy=False`` keeps a zero-copy view
    (fine for inputs of a pure loss), ``copy=True`` returns memory of our own.
    """
    array = item.array if isinstance(item, Viewed) else item
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "The given NumPy array is not writable"
        t = torch.from_numpy(array)
    if isinstance(item, Viewed):
        t = t.view(getattr(torch, item.dtype))
    if device.type != "cpu":
        return t.to(device, non_blocking=False)
    return t.clone() if copy else t


def encode_tree(tree: Any) -> Any:
    """Every tensor leaf of a pytree (a batch: ``None``, tensors, dicts, tuples) encoded."""
    return pytree.tree_map(lambda x: encode(x) if isinstance(x, torch.Tensor) else x, tree)


def decode_tree(tree: Any, device: torch.device) -> Any:
    """Inverse of :func:`encode_tree` (zero-copy on CPU)."""
    return pytree.tree_map(
        lambda x: decode(x, device, copy=False) if isinstance(x, (np.ndarray, Viewed)) else x,
        tree,
        is_leaf=lambda x: isinstance(x, Viewed),
    )


def nbytes(tree: Any) -> int:
    """Bytes of the array / tensor leaves of a pytree."""
    total = 0
    for leaf in pytree.tree_leaves(tree, is_leaf=lambda x: isinstance(x, Viewed)):
        if isinstance(leaf, Viewed):
            total += leaf.array.nbytes
        elif isinstance(leaf, np.ndarray):
            total += leaf.nbytes
        elif isinstance(leaf, torch.Tensor):
            total += leaf.numel() * leaf.element_size()
    return total
