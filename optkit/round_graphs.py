"""An executor round replayed from a CUDA graph per input shape (``vmap``'s ``cuda_graph``).

A small network's training step on a GPU is bound by the host: the device finishes each kernel
before Python has launched the next one. Replaying the round's forward and backward from a
captured graph launches them all at once. :class:`GraphedRounds` keeps one graph per round
shape: the first round of a shape runs eagerly (a warm-up), the second captures the round on
static input tensors and replays it; later rounds copy their points and batches into the
static inputs (one multi-tensor copy), replay, and copy the outputs out (one more), so every
:class:`~optkit.interfaces.Evaluation` holds fresh tensors, as the eager path's do.

Only for objectives that declare :attr:`~optkit.interfaces.Objective.graph_safe`: a replay
repeats the captured kernels on the captured memory, so a loss that branches on values, syncs
with the host or reads a tensor the objective later *replaces* (rather than updates in place)
would be replayed wrongly, not rejected.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils import _pytree as pytree

from optkit.interfaces import Batch, Evaluation, Objective, Params

log = logging.getLogger(__name__)

RoundBody = Callable[[Params, Batch], tuple[torch.Tensor, Params]]
"""``(static params, static batch) -> (losses, grads)`` for one round shape: for one point the
params are one params dict and ``losses`` is 0-dim; for N points every tensor has a leading
dimension N (stacked), ``losses`` has shape ``(N,)``. Pure in its arguments."""

EagerRound = Callable[[Objective, Sequence[Params], Sequence[Batch]], Evaluation]


def round_key(objective: Objective, points: Sequence[Params], batches: Sequence[Batch]) -> Hashable:
    """What a captured round depends on: the objective, N, and the names, shapes, dtypes and
    devices of the first point's tensors and the first batch's leaves (every point and batch
    of a round has the same; stacking them would fail otherwise)."""
    leaves, spec = pytree.tree_flatten(batches[0])
    return (
        id(objective),
        len(points),
        tuple((k, v.shape, v.dtype, v.device) for k, v in points[0].items()),
        str(spec),
        tuple((t.shape, t.dtype, t.device) if isinstance(t, torch.Tensor) else t for t in leaves),
    )


@dataclass
class _Captured:
    """One round shape's graph, its static inputs, and where each call's tensors go."""

    graph: Any  # torch.cuda.CUDAGraph
    objective: Objective
    """Kept alive with its graph: the graph reads the objective's tensors (its data), and the
    key names the objective by ``id``, which must not be reused while the graph lives."""
    params: Params
    batch: Batch
    inputs: list[torch.Tensor]
    """Destinations, in the order :func:`_sources` lists a call's tensors (slices of the
    stacked inputs for N > 1)."""
    losses: torch.Tensor
    grads: Params

    def load(self, points: Sequence[Params], batches: Sequence[Batch]) -> None:
        torch._foreach_copy_(self.inputs, _sources(points, batches))

    def replay(self, n: int) -> Evaluation:
        self.graph.replay()
        outputs = [self.losses, *self.grads.values()]
        copies = [torch.empty_like(t) for t in outputs]
        torch._foreach_copy_(copies, outputs)
        losses, grads = copies[0], dict(zip(self.grads, copies[1:], strict=True))
        if n == 1:
            return Evaluation(losses.reshape(1), [grads])
        return Evaluation(losses, [{k: v[i] for k, v in grads.items()} for i in range(n)])


def _sources(points: Sequence[Params], batches: Sequence[Batch]) -> list[torch.Tensor]:
    """A round's input tensors: every point's params (key-major for N > 1: key 1 of each
    point, then key 2, ...), then every batch's leaves (leaf-major)."""
    out = [p[k] for k in points[0] for p in points]
    if batches[0] is not None:
        flat = [pytree.tree_leaves(b) for b in batches]
        out.extend(leaves[j] for j in range(len(flat[0])) for leaves in flat)
    return out


def _static_inputs(
    points: Sequence[Params], batches: Sequence[Batch]
) -> tuple[Params, Batch, list[torch.Tensor]]:
    """Fresh static params and batch for a round shape (stacked for N > 1; the batch's
    leaves on the params' device) and the destination of each of :func:`_sources`."""
    n, device = len(points), next(iter(points[0].values())).device
    if n == 1:
        params = {k: torch.empty_like(v) for k, v in points[0].items()}
        dests = list(params.values())
    else:
        params = {k: v.new_empty((n, *v.shape)) for k, v in points[0].items()}
        dests = [params[k][i] for k in params for i in range(n)]
    if batches[0] is None:
        return params, None, dests
    leaves, spec = pytree.tree_flatten(batches[0])
    shape = (lambda t: t.shape) if n == 1 else (lambda t: (n, *t.shape))
    statics = [torch.empty(shape(t), dtype=t.dtype, device=device) for t in leaves]
    if n == 1:
        dests.extend(statics)
    else:
        dests.extend(s[i] for s in statics for i in range(n))
    return params, pytree.tree_unflatten(statics, spec), dests


class GraphedRounds:
    """Rounds replayed from CUDA graphs, one per :func:`round_key`, at most ``max_shapes``
    (a further shape runs eagerly). A failed capture logs a warning once and turns every
    later round eager: the results are the same, only slower.

    Counters (reported by the executor's ``diagnostics``): ``replays``, ``eager`` rounds,
    ``captured`` shapes, and the capture ``failure`` if any.
    """

    def __init__(self, what: str, max_shapes: int = 4) -> None:
        self.what, self.max_shapes = what, max_shapes
        self.captured: dict[Hashable, _Captured] = {}
        self._warm: set[Hashable] = set()
        self.failure: str | None = None
        self.replays = 0
        self.eager = 0

    def evaluate(
        self,
        objective: Objective,
        points: Sequence[Params],
        batches: Sequence[Batch],
        body: RoundBody,
        eager: EagerRound,
    ) -> Evaluation:
        """The round from its graph (capturing it on the shape's second round), or
        ``eager(objective, points, batches)`` while warming up or when capture is off."""
        key = round_key(objective, points, batches)
        entry = self.captured.get(key)
        if entry is None:
            room = len(self.captured) < self.max_shapes
            if self.failure is not None or not room or key not in self._warm:
                if room:
                    self._warm.add(key)
                self.eager += 1
                return eager(objective, points, batches)
            entry = self._capture(objective, points, batches, body)
            if entry is None:
                self.eager += 1
                return eager(objective, points, batches)
            self.captured[key] = entry
        entry.load(points, batches)
        self.replays += 1
        return entry.replay(len(points))

    def _capture(
        self,
        objective: Objective,
        points: Sequence[Params],
        batches: Sequence[Batch],
        body: RoundBody,
    ) -> _Captured | None:
        params, batch, inputs = _static_inputs(points, batches)
        torch._foreach_copy_(inputs, _sources(points, batches))
        try:
            # warm up on a side stream (lazy autograd and library state), then capture
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                body(params, batch)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                losses, grads = body(params, batch)
        except Exception as err:  # any capture failure: eager from now on, same results
            self.failure = f"{type(err).__name__}: {err}"
            log.warning(
                "CUDA graph capture of %s failed (%s); its rounds run eagerly",
                self.what,
                self.failure,
            )
            return None
        return _Captured(graph, objective, params, batch, inputs, losses, grads)

    def diagnostics(self) -> dict[str, Any]:
        """JSON-plain counters (see the class docstring)."""
        return {
            "event": "cuda_graph",
            "captured": len(self.captured),
            "replays": self.replays,
            "eager": self.eager,
            "failure": self.failure,
        }
