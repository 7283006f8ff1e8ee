"""What a plugin gets from its caller instead of from process-wide state: a :class:`RunContext`.

The runner builds one per cell (device, dtype, the registry the task was checked against, the
cell's seed) and passes it on:

* to ``Registry.create``, which hands it to a plugin whose ``__init__`` declares a keyword
  ``run_context`` parameter (a wrapper that builds its ``base`` optimizer, say); it is not a
  config key, a task file cannot set it;
* to ``Objective.prepare`` through :func:`prepare_objective` (the objective's ``run_context``
  attribute is set first; an override that declares a ``run_context`` parameter also gets it
  as an argument; the older ``prepare(device, dtype)`` still works);
* to hyperoptimizers as ``HyperContext.context``.

A plugin that builds a nested component calls ``run_context.create(kind, spec, where)``, never
:func:`optkit.registry.get_registry`: so a private registry passed to
``run_task(registry=...)`` reaches every nested pairing.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from optkit.interfaces import Objective
    from optkit.registry import Registry


@dataclass(frozen=True)
class RunContext:
    """Where and with what a component runs.

    Attributes:
        device / dtype: where the cell's tensors live.
        registry: the registry to build nested components from. ``None`` only in a context
            built by hand outside a run (a notebook): :attr:`plugins` then falls back to the
            process-wide registry, the one place that fallback lives.
        seed: the cell's seed (``None`` outside a cell); :meth:`generator` is seeded from it.
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    registry: Registry | None = None
    seed: int | None = None

    @property
    def plugins(self) -> Registry:
        """The registry of this context (the process-wide one when none was given)."""
        if self.registry is not None:
            return self.registry
        from optkit.registry import get_registry

        return get_registry()

    def generator(self) -> torch.Generator:
        """A fresh CPU ``torch.Generator`` seeded from :attr:`seed` (0 when unset)."""
        return torch.Generator().manual_seed(self.seed or 0)

    def create(self, kind: str, spec: Mapping[str, Any], where: str = "") -> Any:
        """``self.plugins.create(kind, spec, where, context=self)``: a nested component built
        from this context's registry, receiving this context in turn."""
        return self.plugins.create(kind, spec, where, context=self)

    def replace(self, **changes: Any) -> RunContext:
        """A copy with some fields changed (``context.replace(seed=3)``)."""
        return dataclasses.replace(self, **changes)


CONTEXT_PARAMETER = "run_context"
"""The keyword ``__init__`` / ``prepare`` parameter through which a plugin asks for the
caller's :class:`RunContext` (not ``context``: objectives use that name for other things, such
as a language model's context length)."""


def accepts_context(function: Any) -> bool:
    """Whether ``function`` has a parameter named ``run_context``."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    return CONTEXT_PARAMETER in parameters


def prepare_objective(objective: Objective, context: RunContext) -> None:
    """Set ``objective.run_context``, then call ``objective.prepare``: as
    ``prepare(device, dtype, run_context=context)`` when the override declares ``run_context``,
    else as ``prepare(device, dtype)`` (the signature every objective had before contexts)."""
    objective.run_context = context
    if accepts_context(objective.prepare):
        objective.prepare(context.device, context.dtype, run_context=context)  # type: ignore[call-arg]
    else:
        objective.prepare(context.device, context.dtype)
