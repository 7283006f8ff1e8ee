"""Built-in executors, ``serial`` (a loop) and ``vmap`` (one ``torch.func.vmap`` call), and
the built-in launcher ``local`` (cells one after the other in this process).

This module is also the core's own plugin: it registers them through the same ``optkit``
entry-point group as every other plugin.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch.func import grad_and_value, vmap
from torch.utils import _pytree as pytree

from optkit.hookspecs import Register, hookimpl
from optkit.interfaces import (
    Batch,
    CellBatch,
    Evaluation,
    Executor,
    Launcher,
    Objective,
    Params,
    Support,
)
from optkit.process_launcher import ProcessLauncher
from optkit.round_graphs import GraphedRounds, RoundBody


def stack_points(points: Sequence[Params]) -> Params:
    """N params dicts -> one dict of tensors with a leading dimension N."""
    return {k: torch.stack([p[k] for p in points]) for k in points[0]}


def unstack_points(stacked: Params, n: int) -> list[Params]:
    """Inverse of :func:`stack_points`: views into ``stacked``."""
    return [{k: v[i] for k, v in stacked.items()} for i in range(n)]


def value_and_grad(
    objective: Objective, point: Params, batch: Batch
) -> tuple[torch.Tensor, Params]:
    """The loss and its gradient at one point: ``objective.loss(point, batch)`` (a 0-dim
    tensor) and a params dict of gradients with the point's keys and shapes, both detached.

    Computed with ``torch.autograd.grad`` on detached leaves, so the numbers are those of a
    plain ``loss.backward()`` loop, bit for bit; this skips ``torch.func``'s per-call wrapping
    and pytree work, most of the host time of a small step. Against
    ``torch.func.grad_and_value(objective.loss)(point, batch)`` (the batched path's transform):
    bit for bit on the synthetic functions and MLPs (``tests/core/test_executors.py``), equal
    up to float rounding where the two backward passes differ (a SmolLM2 LoRA objective:
    relative 8e-6 in float32), as the batched path is anyway. A parameter the loss does not
    use gets zeros, as there. ``point`` is not modified and gets no ``.grad``; gradients are
    computed whatever the caller's grad mode (as ``grad_and_value`` does).

    Raises:
        RuntimeError: the loss is not a 0-dim tensor (naming the objective and what it
            returned).
    """
    leaves = {key: tensor.detach().requires_grad_(True) for key, tensor in point.items()}
    with torch.enable_grad():
        value = objective.loss(leaves, batch)
        if not isinstance(value, torch.Tensor) or value.dim() != 0:
            got = (
                f"a tensor of shape {tuple(value.shape)}"
                if isinstance(value, torch.Tensor)
                else type(value).__name__
            )
            raise RuntimeError(
                f"objective '{objective.name}': loss(params, batch) must return a scalar"
                f" (0-dim) tensor, got {got}"
            )
        inputs = tuple(leaves.values())
        if value.requires_grad:
            grads = torch.autograd.grad(value, inputs, allow_unused=True, materialize_grads=True)
        else:  # a loss that does not depend on the params at all
            grads = tuple(torch.zeros_like(leaf) for leaf in inputs)
    return value.detach(), dict(zip(leaves, grads, strict=True))


def stack_batches(batches: Sequence[Batch]) -> Batch:
    """N batch pytrees with equal structure -> one pytree of stacked leaves (``None`` stays)."""
    if batches[0] is None:
        return None
    return pytree.tree_map(lambda *leaves: torch.stack(leaves), batches[0], *batches[1:])


class SerialExecutor(Executor):
    """Evaluates the N points one after the other with :func:`value_and_grad`."""

    name: ClassVar[str] = "serial"
    summary: ClassVar[str] = "N gradient evaluations in a Python loop (the reference)"

    def __init__(self) -> None:
        """No configuration (an explicit signature, so that config keys are checked)."""

    def evaluate(
        self, objective: Objective, points: Sequence[Params], batches: Sequence[Batch]
    ) -> Evaluation:
        losses, all_grads = [], []
        for point, batch in zip(points, batches, strict=True):
            value, grads = value_and_grad(objective, point, batch)
            losses.append(value)
            all_grads.append(grads)
        return Evaluation(torch.stack(losses), all_grads)


class VmapExecutor(Executor):
    """Evaluates the N points in one batched call: ``vmap(grad_and_value(loss))`` over
    stacked parameters and stacked batches. Needs ``objective.vmappable``. A round of one
    point (N = 1, a first-order optimizer's step) is :func:`value_and_grad`: a plain
    autograd pass, without the transforms' host work."""

    name: ClassVar[str] = "vmap"
    summary: ClassVar[str] = "N gradient evaluations in one torch.func.vmap call"

    def __init__(self, *, chunk_size: int | None = None, cuda_graph: bool = False) -> None:
        """Args:
        chunk_size: evaluate at most this many points per vmapped call (memory bound);
            ``None`` evaluates all N at once.
        cuda_graph: on a GPU, replay each round shape's forward and backward from a CUDA
            graph (:mod:`optkit.round_graphs`): the same numbers, far less host work per
            round. Needs an objective that declares ``graph_safe``; does nothing for params
            on the CPU.
        """
        self.chunk_size = chunk_size
        self.cuda_graph = cuda_graph
        self._cache: dict[tuple[int, bool], Callable[..., Any]] = {}
        self._graphs = GraphedRounds("the vmap executor's round") if cuda_graph else None

    def supports(self, objective: Objective) -> Support:
        if not objective.vmappable:
            return Support.no(
                f"objective '{objective.name}' is not vmappable (its loss uses data-dependent"
                " control flow); use executor 'serial'"
            )
        if self.cuda_graph and not objective.graph_safe:
            return Support.no(
                f"objective '{objective.name}' does not declare graph_safe (a replayed CUDA"
                " graph would repeat its first round's control flow and memory); use executor"
                " 'vmap' without cuda_graph"
            )
        return Support.yes()

    def evaluate(
        self, objective: Objective, points: Sequence[Params], batches: Sequence[Batch]
    ) -> Evaluation:
        if self._graphs is not None and next(iter(points[0].values())).is_cuda:
            return self._graphs.evaluate(
                objective, points, batches, self._round_body(objective, len(points)), self._eager
            )
        return self._eager(objective, points, batches)

    def _eager(
        self, objective: Objective, points: Sequence[Params], batches: Sequence[Batch]
    ) -> Evaluation:
        n = len(points)
        if n == 1:  # nothing to batch: no stack/unstack copies, no torch.func transforms
            value, point_grads = value_and_grad(objective, points[0], batches[0])
            return Evaluation(value.reshape(1), [point_grads])
        values, stacked_grads = self._round_body(objective, n)(
            stack_points(points), stack_batches(batches)
        )
        return Evaluation(values, unstack_points(stacked_grads, n))

    def _round_body(self, objective: Objective, n: int) -> RoundBody:
        """The round on stacked params and batch (one point's params and batch for n = 1):
        ``(losses, grads)``, detached."""
        if n == 1:
            return lambda point, batch: value_and_grad(objective, point, batch)

        def body(stacked: Params, stacked_batch: Batch) -> tuple[torch.Tensor, Params]:
            key = (id(objective), stacked_batch is not None)
            fn = self._cache.get(key)
            if fn is None:
                in_dims = (0, 0) if stacked_batch is not None else (0, None)
                fn = vmap(
                    grad_and_value(objective.loss), in_dims=in_dims, chunk_size=self.chunk_size
                )
                self._cache = {key: fn}
            stacked_grads, values = fn(stacked, stacked_batch)
            return values.detach(), {k: v.detach() for k, v in stacked_grads.items()}

        return body

    def diagnostics(self) -> list[dict[str, Any]]:
        """With ``cuda_graph``, once the cell ran a round on a GPU: the graphs' counters
        (:meth:`optkit.round_graphs.GraphedRounds.diagnostics`)."""
        graphs = self._graphs
        if graphs is None or graphs.replays + graphs.eager == 0:
            return []
        return [graphs.diagnostics()]


class LocalLauncher(Launcher):
    """Runs the cells one after the other in this process, rows streaming into the run
    directory as each evaluation happens; prints a start line and an outcome line per cell."""

    name: ClassVar[str] = "local"
    summary: ClassVar[str] = "cells one after the other in this process"

    def __init__(self) -> None:
        """No configuration (an explicit signature, so that config keys are checked)."""

    def launch(self, batch: CellBatch) -> None:
        from optkit.progress import MatrixProgress

        lines = MatrixProgress(len(batch.cells), batch.progress)
        for number, cell in enumerate(batch.cells, 1):
            lines.start(number, cell.key)
            start = time.perf_counter()
            _ok, outcome = batch.run_here(cell)
            lines.end(number, cell.key, outcome, time.perf_counter() - start)


@hookimpl
def optkit_register_executors(register: Register) -> None:
    register(SerialExecutor)
    register(VmapExecutor)


@hookimpl
def optkit_register_launchers(register: Register) -> None:
    register(LocalLauncher)
    register(ProcessLauncher)
