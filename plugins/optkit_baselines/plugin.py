"""Entry point of the built-in ``optkit_baselines`` plugin."""

from __future__ import annotations

from optkit.hookspecs import Register, hookimpl
from optkit_baselines.torch_optim import TORCH_OPTIMIZERS


@hookimpl
def optkit_register_optimizers(register: Register) -> None:
    for cls in TORCH_OPTIMIZERS:
        register(cls)
    from optkit_baselines.parallel import DataParallel, Target

    register(Target)
    register(DataParallel)
