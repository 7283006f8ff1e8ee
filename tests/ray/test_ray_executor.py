"""The ``ray`` executor against the ``serial`` one, on a local 2-CPU Ray instance."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from _ray_helpers import DieOnceSphere

import optkit
from optkit.errors import ConfigError
from optkit.executors import SerialExecutor
from optkit.interfaces import Evaluation, Objective
from optkit.oracle import Oracle

pytestmark = pytest.mark.ray

SMALL = {"num_cpus_per_actor": 0.5, "startup_timeout_s": 60.0}


def _objective(spec: dict[str, Any]) -> Objective:
    obj = optkit.get_registry().create("objective", spec)
    assert obj.optkit_spec == spec  # recorded by Registry.create: actors rebuild from it
    obj.prepare(torch.device("cpu"), torch.float32)
    return obj


def _same(a: Evaluation, b: Evaluation) -> None:
    torch.testing.assert_close(a.losses, b.losses, rtol=1e-6, atol=1e-6)
    assert len(a.grads) == len(b.grads)
    for ga, gb in zip(a.grads, b.grads, strict=True):
        assert ga.keys() == gb.keys()
        for k in ga:
            torch.testing.assert_close(ga[k], gb[k], rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def executor(ray_session: Any) -> Iterator[Any]:
    """Two actors of half a CPU each (leaving one CPU of the two for the other tests' actors),
    shared by the tests of this module: they start once."""
    ex = optkit.get_registry().create("executor", {"name": "ray", **SMALL, "num_actors": 2})
    yield ex
    ex.close()


def _trajectory(executor: Any, spec: dict[str, Any], rounds: int) -> list[Evaluation]:
    """Rounds of 4 points (a base point and 3 offsets) drawn through the Oracle with seed 0,
    moving the base point by Adam on the first gradient: batches come from the generator."""
    obj = _objective(spec)
    gen = torch.Generator().manual_seed(0)
    params = obj.init_params(gen)
    opt = optkit.get_registry().create("optimizer", {"name": "adam", "lr": 0.05})
    state = opt.init(params)
    oracle = Oracle(obj, executor, gen)
    out = []
    for _ in range(rounds):
        points = [params] + [{"x": params["x"] + 0.1 * j} for j in (1, 2, 3)]
        ev = oracle.evaluate(points)
        out.append(ev)
        params, state = opt.update(params, ev.grads[0], state)
    assert oracle.grad_evals == 4 * rounds and oracle.sequential_steps == rounds
    return out


@pytest.mark.parametrize(
    "spec",
    [{"name": "rosenbrock", "dim": 30}, {"name": "sphere", "dim": 20, "noise": 0.5}],
    ids=["rosenbrock", "sphere-noise"],
)
def test_matches_serial(executor: Any, spec: dict[str, Any]) -> None:
    ray_runs = _trajectory(executor, spec, rounds=4)
    serial_runs = _trajectory(SerialExecutor(), spec, rounds=4)
    for a, b in zip(ray_runs, serial_runs, strict=True):
        _same(a, b)
    # 4 points on 2 actors: two slots each, every tensor new each round
    assert executor.events == []


def test_optimizer_steps_match_serial(executor: Any) -> None:
    """A whole run of a plain optimizer (one point per round) through the ray executor."""
    spec = {"name": "ackley", "dim": 10, "noise": 0.2}
    finals = []
    for ex in (executor, SerialExecutor()):
        obj = _objective(spec)
        gen = torch.Generator().manual_seed(3)
        params = obj.init_params(gen)
        opt = optkit.get_registry().create("optimizer", {"name": "sgd", "lr": 0.01})
        state = opt.init(params)
        oracle = Oracle(obj, ex, gen)
        for _ in range(8):
            params, state, _ = opt.step(params, state, oracle)
        finals.append(params["x"])
    torch.testing.assert_close(finals[0], finals[1], rtol=1e-6, atol=1e-6)


def test_sends_only_what_changed(executor: Any) -> None:
    obj = _objective({"name": "sphere", "dim": 1000})
    p = obj.init_params(torch.Generator().manual_seed(1))
    q = {"x": p["x"] * 0.5}
    stats = executor.stats
    before = stats.as_dict()
    ev = executor.evaluate(obj, [p, p, p, p], [None] * 4)  # one point shared by all: one put
    assert stats.bytes_out - before["bytes_out"] == 1000 * 4
    _same(ev, SerialExecutor().evaluate(obj, [p] * 4, [None] * 4))
    mid = stats.as_dict()
    executor.evaluate(obj, [p, p, q, q], [None] * 4)  # slot 0 of both actors keeps p
    assert stats.tensors_skipped - mid["tensors_skipped"] == 2
    assert stats.bytes_out - mid["bytes_out"] == 1000 * 4  # only q travels
    p["x"].mul_(2.0)  # changed in place: must be sent again although the object is the same
    ev = executor.evaluate(obj, [p, p, q, q], [None] * 4)
    assert float(ev.losses[0]) == pytest.approx(float((p["x"] ** 2).sum()), rel=1e-5)
    assert stats.bytes_in > 0 and stats.wait_s > 0


def test_killed_actor_is_restarted_and_round_retried(executor: Any, ray_session: Any) -> None:
    obj = _objective({"name": "rosenbrock", "dim": 30})
    p = obj.init_params(torch.Generator().manual_seed(2))
    q = {"x": p["x"] + 1.0}
    first = executor.evaluate(obj, [p, q], [None, None])  # both actors now cache a point
    pid = executor.actor_pids()[1]
    os.kill(pid, signal.SIGKILL)  # kill the process: Ray restarts the actor (max_restarts=3)
    again = executor.evaluate(obj, [p, q], [None, None])  # unchanged points: nothing re-sent...
    _same(again, first)  # ...except to the restarted actor, which lost its copy
    assert [(e["event"], e["actor"], e["round"]) for e in executor.events] == [
        ("actor_restarted", 1, executor.stats.rounds)
    ]
    assert executor.actor_pids()[1] != pid
    assert executor.diagnostics() == executor.events  # what the runner stores in the end row
    executor.events.clear()


def test_actor_dying_mid_round_is_replaced(ray_session: Any, tmp_path: Path) -> None:
    """The loss kills its process during a round; with ``max_restarts = 0`` the executor
    replaces the actor and re-sends the round: same result as serial, event recorded."""
    marker = tmp_path / "die-once"
    obj = DieOnceSphere(marker=str(marker), dim=6)  # no registry spec: the instance is shipped
    obj.prepare(torch.device("cpu"), torch.float32)
    ex = optkit.get_registry().create(
        "executor", {"name": "ray", **SMALL, "num_actors": 1, "max_restarts": 0}
    )
    try:
        p = obj.init_params(torch.Generator().manual_seed(0))
        q = {"x": p["x"] - 1.0}
        ex.evaluate(obj, [p, q], [None, None])
        marker.touch()
        ev = ex.evaluate(obj, [q, p], [None, None])
        assert not marker.exists()
        assert [e["event"] for e in ex.events] == ["actor_replaced"]
        assert ex.events[0]["round"] == 2
        _same(ev, SerialExecutor().evaluate(obj, [q, p], [None, None]))
        (handle,) = ex.actors
    finally:
        ex.close()
    # close() killed the actor; ray.kill is asynchronous, so a ping sent at once may still be
    # served: the actor must be gone within a few seconds
    deadline = time.monotonic() + 30
    with pytest.raises(ray_session.exceptions.RayActorError):
        while time.monotonic() < deadline:
            ray_session.get(handle.ping.remote(), timeout=30)
            time.sleep(0.2)


def test_unreachable_address_names_it(ray_session: Any) -> None:
    obj = _objective({"name": "sphere", "dim": 3})
    ex = optkit.get_registry().create(
        "executor", {"name": "ray", "address": "127.0.0.1:9", "connect_timeout_s": 2.0}
    )
    with pytest.raises(ConfigError, match=r"127\.0\.0\.1:9"):
        ex.evaluate(obj, [obj.init_params(torch.Generator())], [None])
    ex = optkit.get_registry().create(
        "executor", {"name": "ray", "address": "no-port-here", "num_actors": 1}
    )
    with pytest.raises(ConfigError, match="no-port-here"):
        ex.bind(obj)


def test_bad_config_is_a_clear_error(ray_session: Any) -> None:
    reg = optkit.get_registry()
    with pytest.raises(ConfigError, match="num_actors"):
        reg.create("executor", {"name": "ray", "num_actors": 0})
    with pytest.raises(ConfigError, match="num_gpus_per_actor"):
        reg.create("executor", {"name": "ray", "num_gpus_per_actor": "one"})
    with pytest.raises(ConfigError, match="unknown key 'num_actor'"):
        reg.create("executor", {"name": "ray", "num_actor": 2})
    ex = reg.create("executor", {"name": "ray", "num_actors": 3, "num_cpus_per_actor": 1.0})
    with pytest.raises(ConfigError, match="cluster has 2"):
        ex.bind(_objective({"name": "sphere", "dim": 3}))


def test_optex_through_ray_matches_serial(executor: Any) -> None:
    """OptEx (N = 3 points per round, history, proxy steps in the driver) on the ray executor
    takes the same iterates as on the serial one."""
    spec = {"name": "rosenbrock", "dim": 20, "noise": 0.1}
    finals = []
    for ex in (executor, SerialExecutor()):
        obj = _objective(spec)
        gen = torch.Generator().manual_seed(5)
        params = obj.init_params(gen)
        opt = optkit.get_registry().create(
            "optimizer",
            {"name": "optex", "base": "adam", "base_config": {"lr": 0.05}, "parallelism": 3},
        )
        state = opt.init(params)
        oracle = Oracle(obj, ex, gen)
        for _ in range(4):
            params, state, _ = opt.step(params, state, oracle)
        assert oracle.sequential_steps == 4 and oracle.grad_evals == 12
        finals.append(params["x"])
    torch.testing.assert_close(finals[0], finals[1], rtol=1e-5, atol=1e-5)
