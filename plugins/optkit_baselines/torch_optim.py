"""``torch.optim`` update rules as functional optkit optimizers.

The update rule is torch's own: a :class:`TorchOptimizer` keeps one ``torch.optim`` instance
over private *slot* tensors; an update copies the incoming params into the slots, sets their
``.grad``, calls ``step()`` and returns copies. Nothing of Adam or SGD is re-derived here.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from optkit.interfaces import FirstOrderOptimizer, Params


@dataclass
class TorchOptState:
    """The slots the wrapped ``torch.optim`` instance owns, and that instance.

    ``slots``: name -> tensor with the params' shapes; ``optimizer.state`` holds the moments.
    """

    slots: dict[str, torch.Tensor]
    optimizer: torch.optim.Optimizer


class TorchOptimizer(FirstOrderOptimizer):
    """Base for optimizers defined by a ``torch.optim`` class and its keyword arguments."""

    torch_class: ClassVar[type[torch.optim.Optimizer]]

    def torch_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``torch_class`` (override where names differ)."""
        return dict(vars(self))

    def init(self, params: Params) -> TorchOptState:
        slots = {k: v.detach().clone() for k, v in params.items()}
        optimizer = self.torch_class(list(slots.values()), **self.torch_kwargs())
        return TorchOptState(slots, optimizer)

    @torch.no_grad()
    def update(
        self, params: Params, grads: Params, state: TorchOptState
    ) -> tuple[Params, TorchOptState]:
        for key, slot in state.slots.items():
            slot.copy_(params[key])
            slot.grad = grads[key].to(slot.dtype)
        state.optimizer.step()
        out = {k: slot.clone() for k, slot in state.slots.items()}
        for slot in state.slots.values():
            slot.grad = None
        return out, state

    def clone_state(self, state: TorchOptState) -> TorchOptState:
        slots = {k: v.detach().clone() for k, v in state.slots.items()}
        optimizer = self.torch_class(list(slots.values()), **self.torch_kwargs())
        optimizer.load_state_dict(copy.deepcopy(state.optimizer.state_dict()))
        return TorchOptState(slots, optimizer)


class SGD(TorchOptimizer):
    """Stochastic gradient descent (torch.optim.SGD)."""

    name: ClassVar[str] = "sgd"
    summary: ClassVar[str] = "torch.optim.SGD (momentum, Nesterov, weight decay)"
    torch_class = torch.optim.SGD

    def __init__(
        self,
        *,
        lr: float = 0.01,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        self.lr, self.momentum, self.dampening = lr, momentum, dampening
        self.weight_decay, self.nesterov = weight_decay, nesterov


class Adam(TorchOptimizer):
    """Adam (torch.optim.Adam)."""

    name: ClassVar[str] = "adam"
    summary: ClassVar[str] = "torch.optim.Adam"
    torch_class: ClassVar[type[torch.optim.Optimizer]] = torch.optim.Adam

    def __init__(
        self,
        *,
        lr: float = 0.001,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
    ) -> None:
        self.lr, self.betas, self.eps = lr, tuple(betas), eps
        self.weight_decay, self.amsgrad = weight_decay, amsgrad


class AdamW(Adam):
    """AdamW, decoupled weight decay (torch.optim.AdamW)."""

    name: ClassVar[str] = "adamw"
    summary: ClassVar[str] = "torch.optim.AdamW (decoupled weight decay)"
    torch_class = torch.optim.AdamW

    def __init__(
        self,
        *,
        lr: float = 0.001,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)


class RMSprop(TorchOptimizer):
    """RMSprop (torch.optim.RMSprop)."""

    name: ClassVar[str] = "rmsprop"
    summary: ClassVar[str] = "torch.optim.RMSprop"
    torch_class = torch.optim.RMSprop

    def __init__(
        self,
        *,
        lr: float = 0.01,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
    ) -> None:
        self.lr, self.alpha, self.eps = lr, alpha, eps
        self.weight_decay, self.momentum, self.centered = weight_decay, momentum, centered


class Adagrad(TorchOptimizer):
    """Adagrad (torch.optim.Adagrad)."""

    name: ClassVar[str] = "adagrad"
    summary: ClassVar[str] = "torch.optim.Adagrad"
    torch_class = torch.optim.Adagrad

    def __init__(
        self,
        *,
        lr: float = 0.01,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
    ) -> None:
        self.lr, self.lr_decay, self.weight_decay = lr, lr_decay, weight_decay
        self.initial_accumulator_value, self.eps = initial_accumulator_value, eps


class Adamax(TorchOptimizer):
    """Adamax (torch.optim.Adamax)."""

    name: ClassVar[str] = "adamax"
    summary: ClassVar[str] = "torch.optim.Adamax"
    torch_class = torch.optim.Adamax

    def __init__(
        self,
        *,
        lr: float = 0.002,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        self.lr, self.betas, self.eps, self.weight_decay = lr, tuple(betas), eps, weight_decay


TORCH_OPTIMIZERS: list[type[TorchOptimizer]] = [SGD, Adam, AdamW, RMSprop, Adagrad, Adamax]
