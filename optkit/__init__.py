"""optkit: optimization research on parallel hardware, one plugin registry for everything.

The core imports only torch and pluggy; plugins import their heavy dependencies lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from optkit.errors import ConfigError, DivergenceError, OptkitError, PluginError
from optkit.hookspecs import hookimpl
from optkit.interfaces import (
    Batch,
    Evaluation,
    Executor,
    FirstOrderOptimizer,
    HyperContext,
    HyperOptimizer,
    HyperResult,
    Objective,
    Optimizer,
    Params,
    StepInfo,
    Support,
    TrialResult,
)
from optkit.oracle import Oracle

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "ConfigError",
    "DivergenceError",
    "Evaluation",
    "Executor",
    "FirstOrderOptimizer",
    "HyperContext",
    "HyperOptimizer",
    "HyperResult",
    "Objective",
    "OptEx",
    "Optimizer",
    "OptkitError",
    "Oracle",
    "Params",
    "PluginError",
    "StepInfo",
    "Support",
    "TrialResult",
    "get_registry",
    "hookimpl",
    "load_rows",
    "load_task",
    "run",
]

if TYPE_CHECKING:
    from optkit.api import load_rows, load_task, run
    from optkit.registry import get_registry


def __getattr__(name: str) -> Any:
    # Lazy: keep `import optkit` light (the task runner pulls in matplotlib only for reports,
    # OptEx pulls in gpytorch only when used).
    if name in ("run", "load_task", "load_rows"):
        from optkit import api

        return getattr(api, name)
    if name == "get_registry":  # lazy too: parsing a task file loads no plugin
        from optkit.registry import get_registry

        return get_registry
    if name == "OptEx":  # the one place the core names a plugin: a lazy convenience re-export
        from optkit_optex.torch_api import OptEx

        return OptEx
    raise AttributeError(f"module 'optkit' has no attribute {name!r}")
