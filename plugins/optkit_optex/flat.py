"""Params dict <-> one flat vector, the estimator's view of a point."""

from __future__ import annotations

import math

import torch

from optkit.interfaces import Params


class Flattener:
    """Fixed layout of a params dict: keys in order, shapes, offsets.

    ``flatten`` returns a view for a single-tensor dict (no copy) and one concatenation
    otherwise; ``unflatten`` returns views into the vector.
    """

    def __init__(self, params: Params) -> None:
        self.keys = list(params)
        self.shapes = [tuple(params[k].shape) for k in self.keys]
        self.numels = [math.prod(s) for s in self.shapes]
        self.dim = sum(self.numels)

    def flatten(self, params: Params) -> torch.Tensor:
        """``(d,)`` vector of the params in key order."""
        if len(self.keys) == 1:
            return params[self.keys[0]].reshape(-1)
        return torch.cat([params[k].reshape(-1) for k in self.keys])

    def flatten_many(self, many: list[Params]) -> torch.Tensor:
        """``(N, d)``: N params dicts flattened, one stack per key and one concatenation."""
        if len(self.keys) == 1:
            key = self.keys[0]
            return torch.stack([p[key].reshape(-1) for p in many])
        n = len(many)
        return torch.cat([torch.stack([p[k] for p in many]).reshape(n, -1) for k in self.keys], 1)

    def unflatten(self, vec: torch.Tensor) -> Params:
        """Params dict of views into ``vec`` (shape ``(d,)``)."""
        out: Params = {}
        start = 0
        for key, shape, numel in zip(self.keys, self.shapes, self.numels, strict=True):
            out[key] = vec[start : start + numel].view(shape)
            start += numel
        return out
