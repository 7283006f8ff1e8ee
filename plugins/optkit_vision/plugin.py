"""Entry point of the built-in optkit_vision plugin."""

from __future__ import annotations

from optkit.hookspecs import Register, hookimpl
from optkit_vision.objectives import CIFAR10, MNIST, FashionMNIST


@hookimpl
def optkit_register_objectives(register: Register) -> None:
    register(MNIST)
    register(FashionMNIST)
    register(CIFAR10)
