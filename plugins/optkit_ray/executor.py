"""Executor ``ray``: the N gradient evaluations of a round on N Ray actors.

Each actor (:class:`optkit_ray.worker.EvalWorker`) builds and ``prepare()``s its own copy of
the objective once, then evaluates ``torch.func.grad_and_value(objective.loss)`` at the points
it is sent. Batches are drawn in the driver by the :class:`~optkit.oracle.Oracle` with the
cell's generator and sent along, so the randomness -- and, up to floating-point order, the
results -- are those of the ``serial`` executor.

Traffic (see ``docs/benchmarks/scaling.md`` for measurements):

* tensors travel as numpy arrays, which Ray's object store holds zero-copy;
* a point shared by several actors in one round (``data_parallel`` evaluates one point on N
  batches) is ``ray.put`` once and its reference handed to each;
* each actor keeps the last point of each of its slots, and a job carries only the tensors that
  changed (a different tensor object, or the same one modified in place) -- tensors an
  optimizer passes through untouched are not sent again. Deltas are not sent: a dense delta is
  as large as the tensor.

Faults: an actor that dies (its process killed, its node lost) is restarted by Ray (up to
``max_restarts``) or replaced by a new actor, and the round's jobs for it are sent again with
the same points and batches, so the round's result does not change. Each such event is
appended to :attr:`RayExecutor.events`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from optkit.errors import ConfigError, OptkitError
from optkit.interfaces import Batch, Evaluation, Executor, Objective, Params, Requirement
from optkit_ray.transport import decode, encode, encode_tree, nbytes
from optkit_ray.worker import MISS, RELOAD, EvalWorker, Job

MAX_ROUND_RETRIES = 3
"""How many times one actor's share of one round is re-sent before the round fails."""


@dataclass
class _Sent:
    """What the driver last sent to one (actor, slot): its version and the tensors, by
    identity and in-place version counter (``Tensor._version``)."""

    version: int
    tensors: dict[str, tuple[torch.Tensor, int]]


@dataclass
class TransferStats:
    """Counters over the executor's life (read them for benchmarks and rows).

    Attributes:
        rounds: ``evaluate`` calls; points: points evaluated.
        bytes_out: bytes put into the object store for points and batches (each shared
            object counted once); bytes_in: bytes of losses and gradients fetched back.
        tensors_sent / tensors_skipped: tensors sent, and tensors not sent because the actor
            already held them.
        send_s: driver seconds encoding and putting; wait_s: seconds waiting for the actors
            (their compute plus the transfers); receive_s: seconds decoding the gradients.
        compute_s: per round, the gradient seconds of the busiest actor, summed over rounds
            (the part of ``wait_s`` that is not transfer or scheduling).
    """

    rounds: int = 0
    points: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    tensors_sent: int = 0
    tensors_skipped: int = 0
    send_s: float = 0.0
    wait_s: float = 0.0
    receive_s: float = 0.0
    compute_s: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


@dataclass
class _Actor:
    handle: Any
    pid: int
    slots: dict[int, _Sent] = field(default_factory=dict)


class RayExecutor(Executor):
    """N Ray actors, each with its own copy of the objective; points and gradients travel
    through Ray's object store. GPU actors when the cluster has GPUs and the objective runs on
    CUDA (or ``num_gpus_per_actor`` > 0), CPU actors otherwise."""

    name: ClassVar[str] = "ray"
    summary: ClassVar[str] = "N gradient evaluations on Ray actors (processes, GPUs, hosts)"
    # the contract kit evaluates 3 points; on a 2-core CI machine, two half-CPU actors
    test_config: ClassVar[dict[str, Any]] = {"num_actors": 2, "num_cpus_per_actor": 0.5}
    test_marks: ClassVar[tuple[str, ...]] = ("ray",)
    requires: ClassVar[tuple[Requirement, ...]] = (Requirement("ray", "ray"),)

    def __init__(
        self,
        *,
        address: str | None = None,
        num_actors: int | None = None,
        num_gpus_per_actor: float | None = None,
        num_cpus_per_actor: float = 1.0,
        max_restarts: int = 3,
        connect_timeout_s: float = 10.0,
        startup_timeout_s: float = 300.0,
        warmup: bool = True,
    ) -> None:
        """Args:
        address: ``None`` (default): reuse this process's Ray connection or start a local
            instance; ``"auto"``: join the cluster started with ``ray start`` on this machine;
            ``"host:port"`` or ``"ray://host:port"``: join that cluster.
        num_actors: how many actors; ``None``: as many as the first round has points. Points
            beyond ``num_actors`` are shared out round-robin (actor ``i % num_actors``).
        num_gpus_per_actor: GPUs each actor reserves (fractional allowed, e.g. 0.25 puts four
            actors on one GPU); ``None``: ``min(1, GPUs / num_actors)`` when the cluster has
            GPUs and the objective runs on CUDA, else 0 (CPU actors).
        num_cpus_per_actor: CPUs each actor reserves (fractional allowed); also its torch
            thread count (at least 1).
        max_restarts: how many times Ray restarts a dead actor before the executor replaces
            it with a new one.
        connect_timeout_s: seconds to wait for a TCP connection to an explicit ``address``.
        startup_timeout_s: seconds to wait for the actors to start and prepare the objective.
        warmup: each actor takes one gradient at the objective's seed-0 initial point when it
            loads an objective, so that the first round is not slowed by one-time set-up.
        """
        if num_actors is not None and num_actors < 1:
            raise ConfigError(f"executor 'ray': num_actors must be >= 1, got {num_actors}")
        if num_gpus_per_actor is not None and num_gpus_per_actor < 0:
            raise ConfigError(
                f"executor 'ray': num_gpus_per_actor must be >= 0, got {num_gpus_per_actor}"
            )
        if num_cpus_per_actor < 0:
            raise ConfigError(
                f"executor 'ray': num_cpus_per_actor must be >= 0, got {num_cpus_per_actor}"
            )
        if max_restarts < 0:
            raise ConfigError(f"executor 'ray': max_restarts must be >= 0, got {max_restarts}")
        self.address = address
        self.num_actors = num_actors
        self.num_gpus_per_actor = num_gpus_per_actor
        self.num_cpus_per_actor = num_cpus_per_actor
        self.max_restarts = max_restarts
        self.connect_timeout_s = connect_timeout_s
        self.startup_timeout_s = startup_timeout_s
        self.warmup = warmup
        self.events: list[dict[str, Any]] = []
        """Fault events, oldest first: ``{"event": "actor_restarted" | "actor_replaced" |
        "cache_miss", "actor": i, "round": r, "error": str, "time": unix seconds}``."""
        self.stats = TransferStats()
        self._objective: Objective | None = None
        self._actors: list[_Actor] = []
        self._ray: Any = None
        self._remote_cls: Any = None
        self._payload_ref: Any = None
        self._actor_options: dict[str, Any] = {}
        self._load_args: tuple[Any, str, str, int, bool] = (None, "cpu", "float32", 0, False)
        self._token = 0
        self._next_version = 0

    # ----------------------------------------------------------------------------- set-up

    def diagnostics(self) -> list[dict[str, Any]]:
        """The fault events (:attr:`events`) of this executor, oldest first."""
        return list(self.events)

    def bind(self, objective: Objective) -> None:
        """Start the actors for ``objective`` now (otherwise the first round does it)."""
        if self.num_actors is not None:
            self._ensure(objective, self.num_actors)

    def _ensure(self, objective: Objective, n_points: int) -> None:
        """Connect, start the actors, and have them hold ``objective``.

        Actors outlive the objective: a new objective (the next cell of a matrix) is loaded
        into the running actors (``EvalWorker.load``) when it needs the same number of actors
        and resources, so the processes start once per executor.
        """
        if self._objective is objective and self._actors:
            return
        from optkit_ray.connect import connect

        ray = connect(self.address, connect_timeout_s=self.connect_timeout_s)
        self._ray = ray
        n = self.num_actors or n_points
        gpus = self._gpus_per_actor(ray, objective, n)
        device = "cuda" if gpus > 0 else "cpu"
        dtype = str(objective.dtype).removeprefix("torch.")
        payload = objective_payload(objective)
        # a spec is small and travels inline; a pickled instance is put once for all actors
        payload_ref = ray.put(payload) if "instance" in payload else payload
        self._token += 1
        self._load_args = (payload_ref, device, dtype, self._token, self.warmup)
        self._payload_ref = payload_ref  # keep the object alive for actor restarts
        if self._actors and len(self._actors) == n and self._actor_options["num_gpus"] == gpus:
            self._objective = None
            pids = ray.get([a.handle.load.remote(*self._load_args) for a in self._actors])
            for actor, pid in zip(self._actors, pids, strict=True):
                actor.pid, actor.slots = int(pid), {}
            self._objective = objective
            return
        self.close()
        self._check_resources(ray, n, gpus)
        self._remote_cls = ray.remote(EvalWorker)
        self._actor_options = {
            "num_cpus": self.num_cpus_per_actor,
            "num_gpus": gpus,
            "max_restarts": self.max_restarts,
            "max_task_retries": 0,
        }
        handles = [self._new_handle() for _ in range(n)]
        pids = self._wait_ready(handles)
        self._actors = [_Actor(h, pid) for h, pid in zip(handles, pids, strict=True)]
        self._objective = objective

    def _new_handle(self) -> Any:
        threads = max(1, int(self.num_cpus_per_actor))
        return self._remote_cls.options(**self._actor_options).remote(threads)

    def _wait_ready(self, handles: list[Any]) -> list[int]:
        """Load the current objective into new actors; their pids."""
        ray = self._ray
        refs = [h.load.remote(*self._load_args) for h in handles]
        _, pending = ray.wait(refs, num_returns=len(refs), timeout=self.startup_timeout_s)
        if pending:
            for h in handles:
                ray.kill(h)
            raise OptkitError(
                f"executor 'ray': {len(pending)} of {len(handles)} actors did not start within"
                f" {self.startup_timeout_s:g} s (each asks for {self.num_cpus_per_actor:g} CPU"
                f" and {self._actor_options['num_gpus']:g} GPU; free now:"
                f" {_cpu_gpu(ray.available_resources())} of {_cpu_gpu(ray.cluster_resources())};"
                " other actors or tasks may hold the rest)"
            )
        return [int(p) for p in ray.get(refs)]

    def _gpus_per_actor(self, ray: Any, objective: Objective, n: int) -> float:
        if self.num_gpus_per_actor is not None:
            return float(self.num_gpus_per_actor)
        total = float(ray.cluster_resources().get("GPU", 0.0))
        if total <= 0 or objective.device.type != "cuda":
            return 0.0
        return min(1.0, total / n)

    def _check_resources(self, ray: Any, n: int, gpus: float) -> None:
        resources = ray.cluster_resources()
        for what, per_actor in (("CPU", self.num_cpus_per_actor), ("GPU", gpus)):
            have = float(resources.get(what, 0.0))
            if per_actor > 0 and n * per_actor > have + 1e-9:
                key = "num_cpus_per_actor" if what == "CPU" else "num_gpus_per_actor"
                raise ConfigError(
                    f"executor 'ray': {n} actors x {per_actor:g} {what} = {n * per_actor:g}"
                    f" {what}, but the Ray cluster has {have:g}; lower num_actors or {key}"
                    " (fractions such as 0.5 are allowed)"
                )

    def close(self) -> None:
        """Kill the actors (the Ray connection itself stays for the next cell)."""
        if self._ray is not None:
            for actor in self._actors:
                self._ray.kill(actor.handle, no_restart=True)
        self._actors = []
        self._objective = None
        self._payload_ref = None

    def actor_pids(self) -> list[int]:
        """Process ids of the actors (as of their last start)."""
        return [a.pid for a in self._actors]

    @property
    def actors(self) -> list[Any]:
        """The Ray actor handles, in actor order."""
        return [a.handle for a in self._actors]

    # ----------------------------------------------------------------------------- rounds

    def evaluate(
        self, objective: Objective, points: Sequence[Params], batches: Sequence[Batch]
    ) -> Evaluation:
        n = len(points)
        self._ensure(objective, n)
        stats = self.stats
        stats.rounds += 1
        stats.points += n
        n_actors = len(self._actors)
        t0 = time.perf_counter()
        puts: dict[tuple[Any, ...], Any] = {}
        encoded_batches = [encode_tree(b) for b in batches]
        stats.bytes_out += sum(nbytes(b) for b in encoded_batches)
        share: dict[int, list[int]] = {}
        for i in range(n):
            share.setdefault(i % n_actors, []).append(i)
        jobs = {
            a: [self._job(a, i // n_actors, points[i], encoded_batches[i], puts) for i in idx]
            for a, idx in share.items()
        }
        token = self._token
        pending = {a: self._actors[a].handle.evaluate.remote(token, js) for a, js in jobs.items()}
        t1 = time.perf_counter()
        stats.send_s += t1 - t0
        outputs = self._collect(jobs, pending, points, encoded_batches, share)
        t2 = time.perf_counter()
        stats.wait_s += t2 - t1
        device = points[0][next(iter(points[0]))].device
        losses: list[torch.Tensor] = [torch.empty(())] * n
        grads: list[Params] = [{}] * n
        stats.compute_s += max(sum(out[2] for out in outputs[a]) for a in outputs)
        for a, idx in share.items():
            for i, (loss, grad, _) in zip(idx, outputs[a], strict=True):
                stats.bytes_in += loss.nbytes + nbytes(grad)
                losses[i] = torch.from_numpy(loss.copy())
                grads[i] = {k: decode(g, device, copy=True) for k, g in grad.items()}
        stats.receive_s += time.perf_counter() - t2
        return Evaluation(torch.stack(losses).to(device), grads)

    def _job(self, a: int, slot: int, point: Params, batch: Any, puts: dict[Any, Any]) -> Job:
        """The job for ``point`` on actor ``a``'s ``slot``: only the tensors it lacks."""
        actor = self._actors[a]
        sent = actor.slots.get(slot)
        keys = tuple(point)
        if sent is None or tuple(sent.tensors) != keys:
            changed = list(keys)
        else:
            changed = [
                k
                for k in keys
                if sent.tensors[k][0] is not point[k] or sent.tensors[k][1] != point[k]._version
            ]
        self.stats.tensors_sent += len(changed)
        self.stats.tensors_skipped += len(keys) - len(changed)
        ref = None
        if changed:
            tag = tuple((k, id(point[k]), point[k]._version) for k in changed)
            ref = puts.get(tag)
            if ref is None:
                arrays = {k: encode(point[k]) for k in changed}
                self.stats.bytes_out += nbytes(arrays)
                ref = self._ray.put(arrays)
                puts[tag] = ref
        self._next_version += 1
        job = Job(
            slot=slot,
            version=self._next_version,
            base_version=sent.version if sent is not None else -1,
            keys=keys,
            changed=ref,
            batch=batch,
        )
        actor.slots[slot] = _Sent(
            self._next_version, {k: (point[k], point[k]._version) for k in keys}
        )
        return job

    def _collect(
        self,
        jobs: dict[int, list[Job]],
        pending: dict[int, Any],
        points: Sequence[Params],
        batches: list[Any],
        share: dict[int, list[int]],
    ) -> dict[int, list[Any]]:
        """Wait for every actor's share; re-send the share of an actor that died or lost its
        cached points (with the full points, same batches)."""
        ray = self._ray
        from ray.exceptions import ActorUnavailableError, RayActorError

        outputs: dict[int, list[Any]] = {}
        attempts = dict.fromkeys(pending, 0)
        while pending:
            ready, _ = ray.wait(list(pending.values()), num_returns=1)
            a = next(k for k, ref in pending.items() if ref == ready[0])
            ref = pending.pop(a)
            try:
                out = ray.get(ref)
            except (RayActorError, ActorUnavailableError) as exc:
                self._recover(a, exc)
                out = MISS
            else:
                if isinstance(out, str) and out == RELOAD:  # restarted with its first objective
                    self._record("actor_restarted", a, "found without the current objective")
                    self._actors[a].pid = int(
                        ray.get(self._actors[a].handle.load.remote(*self._load_args))
                    )
                    out = MISS
                elif isinstance(out, str) and out == MISS:
                    self._record("cache_miss", a, "the actor lost its cached points")
            if isinstance(out, str) and out == MISS:
                attempts[a] += 1
                if attempts[a] > MAX_ROUND_RETRIES:
                    raise OptkitError(
                        f"executor 'ray': actor {a} failed {attempts[a]} times in round"
                        f" {self.stats.rounds}; giving up (events: {self.events[-3:]})"
                    )
                self._actors[a].slots.clear()
                puts: dict[tuple[Any, ...], Any] = {}
                jobs[a] = [
                    self._job(a, i // len(self._actors), points[i], batches[i], puts)
                    for i in share[a]
                ]
                pending[a] = self._actors[a].handle.evaluate.remote(self._token, jobs[a])
                continue
            outputs[a] = out
        return outputs

    def _recover(self, a: int, exc: BaseException) -> None:
        """Actor ``a`` died: wait for Ray's restart of it, or replace it; record the event."""
        ray = self._ray
        from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

        actor = self._actors[a]
        actor.slots.clear()
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        deadline = time.monotonic() + self.startup_timeout_s
        while True:  # a restarting actor answers "unavailable" until its __init__ is done
            try:
                left = max(0.1, deadline - time.monotonic())
                ray.get(actor.handle.ping.remote(), timeout=left)
                # Ray re-ran the cheap __init__: load the objective again
                actor.pid = int(ray.get(actor.handle.load.remote(*self._load_args)))
                self._record("actor_restarted", a, error)
                return
            except ActorUnavailableError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            except (RayActorError, GetTimeoutError):  # dead for good (restarts used up)
                break
        ray.kill(actor.handle, no_restart=True)
        handle = self._new_handle()
        (pid,) = self._wait_ready([handle])
        self._actors[a] = _Actor(handle, pid)
        self._record("actor_replaced", a, error)

    def _record(self, event: str, actor: int, error: str) -> None:
        self.events.append(
            {
                "event": event,
                "actor": actor,
                "round": self.stats.rounds,
                "error": error[:300],
                "time": time.time(),
            }
        )


def objective_payload(objective: Objective) -> dict[str, Any]:
    """How actors get their own copy of ``objective``.

    ``{"spec": {"name": ..., **config}, "class": type(objective)}`` when the objective carries
    the spec it was built from (``optkit_spec``, which ``Registry.create`` records): each actor
    builds and prepares a fresh one from that class (resolved by the driver's registry, so no
    worker looks a name up), loading data itself. Otherwise ``{"instance": objective}``: the
    instance is pickled once into the object store (with whatever data it already holds).
    """
    spec = objective.optkit_spec
    if isinstance(spec, dict) and spec.get("name") == objective.name:
        return {"spec": dict(spec), "class": type(objective)}
    return {"instance": objective}


def _cpu_gpu(resources: dict[str, float]) -> str:
    return f"{resources.get('CPU', 0):g} CPU, {resources.get('GPU', 0):g} GPU"
