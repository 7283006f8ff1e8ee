"""Entry point of the built-in optkit_vision plugin."""

from __future__ import annotations

from collections.abc import Callable

from optkit.data import Artifact
from optkit.hookspecs import Register, hookimpl
from optkit_vision.objectives import CIFAR10, MNIST, FashionMNIST


@hookimpl
def optkit_register_objectives(register: Register) -> None:
    register(MNIST)
    register(FashionMNIST)
    register(CIFAR10)


@hookimpl
def optkit_register_artifacts(register: Callable[[Artifact], None]) -> None:
    from optkit_vision.catalog import ARTIFACTS

    for artifact in ARTIFACTS:
        register(artifact)
