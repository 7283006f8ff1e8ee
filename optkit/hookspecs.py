"""The pluggy hook specifications of optkit.

A plugin is a module (or object) with functions marked ``@optkit.hookimpl`` whose names are
the hooks below. Each hook receives ``register``, a callable taking one class; call it once per
class you provide. A third-party package exposes its plugin module through the entry-point
group ``optkit`` in its ``pyproject.toml``::

    [project.entry-points.optkit]
    myplugin = "my_package.plugin"

and nothing else. The built-in plugins under ``plugins/`` register the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT = "optkit"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[[type[Any]], None]


@hookspec
def optkit_register_objectives(register: Register) -> None:
    """Register :class:`optkit.Objective` subclasses: ``register(MyObjective)``.

    Keep heavy imports (datasets, gymnasium, transformers) inside the class's methods so that
    listing plugins stays fast.
    """


@hookspec
def optkit_register_optimizers(register: Register) -> None:
    """Register :class:`optkit.Optimizer` subclasses: ``register(MyOptimizer)``."""


@hookspec
def optkit_register_hyperoptimizers(register: Register) -> None:
    """Register :class:`optkit.HyperOptimizer` subclasses: ``register(MyHyperOptimizer)``."""


@hookspec
def optkit_register_executors(register: Register) -> None:
    """Register :class:`optkit.Executor` subclasses: ``register(MyExecutor)``."""


@hookspec
def optkit_register_launchers(register: Register) -> None:
    """Register :class:`optkit.interfaces.Launcher` subclasses (where whole cells run):
    ``register(MyLauncher)``. ``optkit run --launcher NAME`` picks one; the core registers
    ``local`` (:mod:`optkit.executors`), the ``optkit_ray`` plugin registers ``ray``. Import a
    cluster library inside ``launch``, not at module level."""


@hookspec
def optkit_register_artifacts(register: Callable[[Any], None]) -> None:
    """Register the data this plugin's objectives read, as :class:`optkit.data.Artifact`
    records: ``register(Artifact(...))``. ``optkit data list``, ``fetch`` and ``add`` then know
    them; names must be unique across plugins."""
