"""The module the entry point names: its hook implementations register the classes."""

from __future__ import annotations

from optkit import hookimpl
from optkit.hookspecs import Register
from optkit_example.sign_sgd import SignSGD
from optkit_example.zakharov import Zakharov


@hookimpl
def optkit_register_objectives(register: Register) -> None:
    register(Zakharov)


@hookimpl
def optkit_register_optimizers(register: Register) -> None:
    register(SignSGD)
