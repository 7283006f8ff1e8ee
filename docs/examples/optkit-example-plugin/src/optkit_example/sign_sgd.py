"""signSGD with momentum (signum) as an optkit first-order optimizer."""

from __future__ import annotations

from typing import ClassVar

import torch

from optkit import FirstOrderOptimizer, Params


class SignSGD(FirstOrderOptimizer):
    """x <- x - lr * sign(m), m <- beta m + (1 - beta) g (Bernstein et al., 2018)."""

    name: ClassVar[str] = "sign_sgd"
    summary: ClassVar[str] = "signSGD with momentum (example plugin)"

    def __init__(self, *, lr: float = 0.01, beta: float = 0.9) -> None:
        self.lr = lr
        self.beta = beta

    def init(self, params: Params) -> Params:
        return {k: torch.zeros_like(v) for k, v in params.items()}

    def update(self, params: Params, grads: Params, state: Params) -> tuple[Params, Params]:
        momentum = {k: self.beta * state[k] + (1 - self.beta) * grads[k] for k in params}
        new = {k: params[k] - self.lr * torch.sign(momentum[k]) for k in params}
        return new, momentum

    def clone_state(self, state: Params) -> Params:
        return {k: v.clone() for k, v in state.items()}
