"""CUDA graphs of one body per key, captured on the second call: OptEx's proxy loop and
estimator append (``optkit_optex``) and the ``vmap`` executor's rounds
(:mod:`optkit.round_graphs`) all replay through :class:`KeyedGraphs`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from typing import Any

import torch

log = logging.getLogger(__name__)


class KeyedGraphs:
    """Replays ``body`` from a CUDA graph per key (e.g. a shape or a chosen point).

    The first call for a key runs the body eagerly (a warm-up: it creates lazy state such as
    optimizer moments and cuBLAS workspaces); the second captures it (capture does not run the
    kernels) and replays; later calls replay. The body must read and write only static tensors.
    A failed capture means eager bodies from then on for every key (logged once, naming
    ``what``).
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.graphs: dict[Hashable, Any] = {}  # key -> torch.cuda.CUDAGraph
        self._warm: set[Hashable] = set()
        self.failure: str | None = None
        """The capture's error (``"Type: message"``) once one failed; ``None`` until then."""

    @property
    def failed(self) -> bool:
        """Whether a capture failed (every body runs eagerly since)."""
        return self.failure is not None

    def __len__(self) -> int:
        """Captured graphs."""
        return len(self.graphs)

    def run(self, key: Hashable, body: Callable[[], None]) -> None:
        """``body()``, eagerly or from the key's graph (see the class docstring)."""
        graph = self.graphs.get(key)
        if graph is None:
            if self.failed or key not in self._warm:
                self._warm.add(key)
                body()
                return
            try:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    body()
            except Exception as err:  # any capture failure: eager from now on
                self.failure = f"{type(err).__name__}: {err}"
                log.warning(
                    "CUDA graph capture of %s failed (%s); it runs eagerly from now on",
                    self.what,
                    self.failure,
                )
                body()
                return
            self.graphs[key] = graph
        graph.replay()
