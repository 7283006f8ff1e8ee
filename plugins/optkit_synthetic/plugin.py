"""Entry point of the built-in ``optkit_synthetic`` plugin."""

from __future__ import annotations

from optkit.hookspecs import Register, hookimpl
from optkit_synthetic.functions import FUNCTIONS


@hookimpl
def optkit_register_objectives(register: Register) -> None:
    for cls in FUNCTIONS:
        register(cls)
