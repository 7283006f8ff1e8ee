"""The Ray actor of the ``ray`` executor: one copy of the objective, loss and gradient on call.

Plain class; :mod:`optkit_ray.executor` wraps it with ``ray.remote`` (so importing this module
does not import Ray). Each worker builds its objective once -- from its registry spec, or from
a pickled instance when the objective has no spec -- and ``prepare()``s it once on its own
device, so model and data load once per actor, not once per call.

Points travel as *jobs*. A worker keeps the last point of each of its *slots* (the k-th point
it evaluates in a round) and a job carries only the tensors that changed since the version the
driver last sent to that slot; the others are taken from the worker's copy. A worker that lost
its copies (it was restarted) answers :data:`MISS`, and the driver sends the full point again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.func import grad_and_value

from optkit.context import RunContext, prepare_objective
from optkit_ray.transport import Viewed, decode, decode_tree, encode

MISS = "optkit-ray-cache-miss"
"""What :meth:`EvalWorker.evaluate` returns when a job refers to a point version it lacks."""

RELOAD = "optkit-ray-reload"
"""What :meth:`EvalWorker.evaluate` returns when it holds another objective than the driver's
(or none: Ray restarted it)."""


@dataclass
class Job:
    """One point to evaluate on one worker.

    Attributes:
        slot: which cached point of the worker this job replaces (0 .. points per worker - 1).
        version: the version number the new point gets in that slot.
        base_version: the version the unchanged tensors come from (-1: none, all sent).
        keys: every key of the point, in order.
        changed: object reference (or inline dict) of ``{key: array}`` for the keys that
            changed; ``None`` when nothing changed.
        batch: the encoded batch (see :func:`optkit_ray.transport.encode_tree`).
    """

    slot: int
    version: int
    base_version: int
    keys: tuple[str, ...]
    changed: Any
    batch: Any


def build_objective(payload: Mapping[str, Any], device: torch.device, dtype: torch.dtype) -> Any:
    """The worker's prepared objective.

    ``{"spec": {...}, "class": cls}``: rebuilt from the class the driver's registry resolved
    (so a component of a private registry works too) with
    :func:`optkit.registry.construct`, exactly as the driver built it; ``{"instance": obj}``:
    the pickled instance itself. The objective is prepared with a :class:`RunContext` of the
    worker's device and dtype.
    """
    context = RunContext(device, dtype)
    if "spec" in payload:
        from optkit.registry import construct

        objective = construct(payload["class"], payload["spec"], "executor 'ray' worker", context)
    else:
        objective = payload["instance"]
    prepare_objective(objective, context)
    return objective


class EvalWorker:
    """Holds one prepared objective; evaluates ``grad_and_value(loss)`` at the points sent.

    The objective can be swapped (:meth:`load`) without restarting the process, so a matrix
    of cells pays the process start-up once. ``token`` names the objective held; every call
    of :meth:`evaluate` says which token it expects.
    """

    def __init__(self, num_threads: int) -> None:
        """Cheap on purpose: Ray re-runs it when it restarts the actor, and the driver then
        sends :meth:`load` (an actor holding no objective answers :data:`RELOAD`)."""
        torch.set_num_threads(max(1, num_threads))
        self.token = -1

    def load(
        self, payload: Mapping[str, Any], device: str, dtype: str, token: int, warmup: bool
    ) -> int:
        """Build and prepare the objective of ``payload``; forget cached points; with
        ``warmup``, take one gradient at the objective's seed-0 initial point (the first
        ``torch.func`` call and CUDA kernels load here, not in the first timed round; the
        driver's generator is not touched). Returns the process id."""
        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.cuda.set_device(0)  # Ray sets CUDA_VISIBLE_DEVICES to this actor's GPU(s)
        self.objective = build_objective(payload, self.device, getattr(torch, dtype))
        self._fn = grad_and_value(self.objective.loss)
        self._slots: dict[int, tuple[int, dict[str, torch.Tensor]]] = {}
        if warmup:
            gen = torch.Generator().manual_seed(0)
            point = self.objective.init_params(gen)
            self._fn(point, self.objective.sample_batch(gen, point))
        self.token = token
        return os.getpid()

    def ping(self) -> int:
        """The worker's process id (to check it is alive, and for tests that kill it)."""
        return os.getpid()

    def evaluate(
        self, token: int, jobs: Sequence[Job]
    ) -> list[tuple[np.ndarray, dict[str, Any], float]] | str:
        """Loss and gradient for each job, or :data:`MISS` (nothing evaluated, nothing cached)
        when some job needs tensors of a point version this worker does not hold, or
        :data:`RELOAD` when the worker does not hold objective ``token``.

        Returns:
            One ``(loss as a 0-dim array, {key: encoded gradient}, seconds of the gradient
            computation)`` per job, in order.
        """
        import ray

        if token != self.token:
            return RELOAD
        refs = [j.changed for j in jobs if isinstance(j.changed, ray.ObjectRef)]
        fetched = iter(ray.get(refs)) if refs else iter(())
        points: list[dict[str, torch.Tensor]] = []
        for job in jobs:
            changed = next(fetched) if isinstance(job.changed, ray.ObjectRef) else job.changed
            changed = changed or {}
            held = self._slots.get(job.slot)
            point: dict[str, torch.Tensor] = {}
            for key in job.keys:
                if key in changed:
                    point[key] = decode(changed[key], self.device, copy=False)
                elif held is not None and held[0] == job.base_version and key in held[1]:
                    point[key] = held[1][key]
                else:
                    return MISS
            points.append(point)
        results: list[tuple[np.ndarray, dict[str, np.ndarray | Viewed], float]] = []
        for job, point in zip(jobs, points, strict=True):
            self._slots[job.slot] = (job.version, point)
            start = time.perf_counter()
            grads, value = self._fn(point, decode_tree(job.batch, self.device))
            loss = value.detach().cpu().numpy()  # synchronizes a GPU
            seconds = time.perf_counter() - start
            results.append((loss, {k: encode(g) for k, g in grads.items()}, seconds))
        return results
