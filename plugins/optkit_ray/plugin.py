"""Entry point of the built-in ``optkit_ray`` plugin: registers the ``ray`` executor (N
gradient evaluations on actors) and the ``ray`` launcher (whole cells as Ray tasks).

Ray itself is imported only when the executor starts its actors or the launcher its tasks.
"""

from __future__ import annotations

from optkit.hookspecs import Register, hookimpl
from optkit_ray.executor import RayExecutor
from optkit_ray.launcher import RayLauncher


@hookimpl
def optkit_register_executors(register: Register) -> None:
    register(RayExecutor)


@hookimpl
def optkit_register_launchers(register: Register) -> None:
    register(RayLauncher)
