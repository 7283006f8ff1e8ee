"""Entry point of the built-in ``optkit_ray`` plugin: registers the ``ray`` executor.

Ray itself is imported only when the executor starts its actors.
"""

from __future__ import annotations

from optkit.hookspecs import Register, hookimpl
from optkit_ray.executor import RayExecutor


@hookimpl
def optkit_register_executors(register: Register) -> None:
    register(RayExecutor)
