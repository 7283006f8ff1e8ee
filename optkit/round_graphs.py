"""An executor round replayed from a CUDA graph per input shape (``vmap``'s ``cuda_graph``).

A small network's training step on a GPU is bound by the host: the device finishes each kernel
before Python has launched the next one. Replaying the round's forward and backward from a
captured graph launches them all at once. :class:`GraphedRounds` keeps static input tensors
per round shape and replays through :class:`~optkit.cuda_graphs.KeyedGraphs` (the first round
of a shape runs eagerly on them, a warm-up; the second captures and replays); every round
copies its points and batches into the static inputs (one multi-tensor copy) and the outputs
out (one more), so every :class:`~optkit.interfaces.Evaluation` holds fresh tensors, as the
eager path's do.

Only for objectives that declare :attr:`~optkit.interfaces.Objective.graph_safe`: a replay
repeats the captured kernels on the captured memory, so a loss that branches on values, syncs
with the host or reads a tensor the objective later *replaces* (rather than updates in place)
would be replayed wrongly, not rejected.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch
from torch.utils import _pytree as pytree

from optkit.cuda_graphs import KeyedGraphs
from optkit.interfaces import Batch, Evaluation, Objective, Params

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


class _Round:
    """One round shape's static inputs, where each call's tensors go, and the outputs of its
    last body (eager, or the graph's own once captured: a replay refills those)."""

    def __init__(self, objective: Objective, points: Sequence[Params], batches: Sequence[Batch]):
        self.objective = objective
        """Kept alive with the graph: it reads the objective's tensors (its data), and the key
        names the objective by ``id``, which must not be reused while the graph lives."""
        self.params, self.batch, self.inputs = _static_inputs(points, batches)
        self.losses = torch.empty(0)
        self.grads: Params = {}

    def load(self, points: Sequence[Params], batches: Sequence[Batch]) -> None:
        """One multi-tensor copy of the round's points and batches into the static inputs."""
        torch._foreach_copy_(self.inputs, _sources(points, batches))

    def compute(self, body: RoundBody) -> None:
        self.losses, self.grads = body(self.params, self.batch)

    def copy_out(self, n: int) -> Evaluation:
        """Fresh copies of the outputs (one multi-tensor copy), as the eager path returns."""
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
    """Rounds replayed from CUDA graphs by :class:`~optkit.cuda_graphs.KeyedGraphs`, one per
    :func:`round_key`, at most ``max_shapes`` (a further shape runs ``eager``). A shape's
    first round runs its body eagerly on the static inputs (the warm-up), the second captures
    and replays it. A failed capture logs a warning once and turns every later round eager:
    the results are the same, only slower.

    Counters (reported by the executor's ``diagnostics``): ``replays``, ``eager`` rounds,
    ``captured`` shapes, and the capture ``failure`` if any.
    """

    def __init__(self, what: str, max_shapes: int = 4) -> None:
        self.graphs = KeyedGraphs(what)
        self.max_shapes = max_shapes
        self.rounds: dict[Hashable, _Round] = {}
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
        """The round through its shape's graph, or ``eager(objective, points, batches)`` for
        a shape beyond ``max_shapes``."""
        key = round_key(objective, points, batches)
        entry = self.rounds.get(key)
        if entry is None:
            if len(self.rounds) >= self.max_shapes:
                self.eager += 1
                return eager(objective, points, batches)
            entry = self.rounds[key] = _Round(objective, points, batches)
        entry.load(points, batches)
        self.graphs.run(key, lambda: entry.compute(body))
        if key in self.graphs.graphs:
            self.replays += 1
        else:
            self.eager += 1
        return entry.copy_out(len(points))

    def diagnostics(self) -> dict[str, Any]:
        """JSON-plain counters (see the class docstring)."""
        return {
            "event": "cuda_graph",
            "captured": len(self.graphs),
            "replays": self.replays,
            "eager": self.eager,
            "failure": self.graphs.failure,
        }
