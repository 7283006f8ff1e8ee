"""Entry point of the built-in ``optkit_optex`` plugin: registers the ``optex`` optimizer.

Importing this module imports torch only; gpytorch loads when a marginal-likelihood fit runs.
"""

from __future__ import annotations

from optkit.hookspecs import Register, hookimpl


@hookimpl
def optkit_register_optimizers(register: Register) -> None:
    from optkit_optex.optimizer import OptEx

    register(OptEx)
