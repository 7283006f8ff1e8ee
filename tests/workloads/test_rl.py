"""RL objectives (gymnasium classic control): DQN and REINFORCE, seeded and reproducible."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from workload_helpers import run_steps, vmap_matches_serial

from optkit.errors import ConfigError
from optkit.registry import Registry

pytestmark = pytest.mark.rl

FAST_DQN = {"learning_starts": 64, "batch_size": 32, "target_update": 50, "eps_decay_steps": 200}


@pytest.mark.parametrize("env", ["CartPole-v1", "Acrobot-v1", "MountainCar-v0", "Pendulum-v1"])
def test_dqn_runs_on_each_task(registry: Registry, env: str) -> None:
    obj, params, losses, before, after = run_steps(
        registry, {"name": "dqn", "env": env, **FAST_DQN}, 40, executor="vmap"
    )
    assert before["env_steps"] == 64 and math.isfinite(before["loss"])
    assert after["env_steps"] == 64 + 40  # warm-up, then one env step per gradient evaluation
    assert all(math.isfinite(v) for v in losses)
    assert math.isfinite(after["loss"])
    n_actions = {"CartPole-v1": 2, "Acrobot-v1": 3, "MountainCar-v0": 3, "Pendulum-v1": 5}[env]
    assert params["q2.weight"].shape[0] == n_actions
    assert obj.metric_direction()["reward"] == "max"


def test_dqn_learns_cartpole(registry: Registry) -> None:
    spec = {
        "name": "dqn",
        "env": "CartPole-v1",
        "learning_starts": 200,
        "target_update": 100,
        "eps_decay_steps": 1000,
        "eval_episodes": 2,
    }
    _, _, _, _, after = run_steps(registry, spec, 1500, optimizer={"name": "adam", "lr": 1e-3})
    # random play scores about 22 per episode; a learning agent's running average climbs above
    assert after["reward"] > 28
    assert after["eval_return"] > 60


def _trace(registry: Registry, spec: dict, seed: int, steps: int) -> tuple[list[float], dict]:
    obj, params, losses, _, _ = run_steps(registry, spec, steps, seed=seed)
    return obj.episode_returns + losses, params


@pytest.mark.parametrize("name", ["dqn", "policy_gradient"])
def test_same_seed_same_rewards(registry: Registry, name: str) -> None:
    extra: dict[str, int] = FAST_DQN if name == "dqn" else {"episodes": 2}
    spec: dict[str, object] = {"name": name, "env": "CartPole-v1", **extra}
    steps = 120 if name == "dqn" else 4
    first, p1 = _trace(registry, spec, seed=7, steps=steps)
    again, p2 = _trace(registry, spec, seed=7, steps=steps)
    other, _ = _trace(registry, spec, seed=8, steps=steps)
    assert len(first) > steps  # some episodes finished
    assert first == again
    assert all(torch.equal(p1[k], p2[k]) for k in p1)
    assert first != other


def test_policy_gradient_trains(registry: Registry) -> None:
    obj, _, _losses, _, after = run_steps(
        registry,
        {"name": "policy_gradient", "env": "CartPole-v1", "episodes": 4},
        12,
        optimizer={"name": "adam", "lr": 1e-2},
    )
    returns = obj.episode_returns
    assert len(returns) == 52 and after["episodes"] == 52  # 4 at init_params, then 4 per step
    assert sum(returns[-12:]) / 12 > sum(returns[:12]) / 12
    assert math.isfinite(after["loss"])


def test_policy_gradient_batches_are_padded_and_vmappable(registry: Registry) -> None:
    obj = registry.create(
        "objective",
        {"name": "policy_gradient", "env": "Pendulum-v1", "episodes": 2, "max_steps": 50},
    )
    obj.prepare(torch.device("cpu"), torch.float32)
    params = obj.init_params(torch.Generator().manual_seed(0))
    batch = obj.sample_batch(torch.Generator().manual_seed(1), params)
    assert batch["obs"].shape == (2, 50, 3) and batch["mask"].sum() == 100
    vmap_matches_serial(registry, obj)
    dqn = registry.create("objective", {"name": "dqn", **FAST_DQN})
    dqn.prepare(torch.device("cpu"), torch.float32)
    vmap_matches_serial(registry, dqn)


def test_bad_env_is_a_clear_error(registry: Registry) -> None:
    with pytest.raises(
        ConfigError,
        match=r"unknown gymnasium environment 'CartPole-v9'.*"
        r"Did you mean 'CartPole-v1'",
    ):
        registry.create("objective", {"name": "dqn", "env": "CartPole-v9"})
    with pytest.raises(
        ConfigError,
        match=r"unknown gymnasium environment 'NoSuchEnv'.*"
        r"CartPole-v1, Acrobot-v1, MountainCar-v0, Pendulum-v1",
    ):
        registry.create("objective", {"name": "policy_gradient", "env": "NoSuchEnv"})
    if importlib.util.find_spec("Box2D") is None:  # LunarLander's extra is not installed
        with pytest.raises(ConfigError, match=r"'LunarLander-v3' needs extra packages.*Box2D"):
            registry.create("objective", {"name": "dqn", "env": "LunarLander-v3"})
    with pytest.raises(ConfigError, match=r"action_bins must be >= 2"):
        registry.create(
            "objective", {"name": "dqn", "env": "MountainCarContinuous-v0", "action_bins": 1}
        )
    with pytest.raises(ConfigError, match=r"observation space"):
        registry.create("objective", {"name": "dqn", "env": "FrozenLake-v1"})
    with pytest.raises(ConfigError, match=r"gamma must be in \[0, 1\]"):
        registry.create("objective", {"name": "dqn", "gamma": 1.5})


@pytest.mark.parametrize("name", ["dqn", "policy_gradient"])
def test_restarting_the_run_reproduces_the_first_batch(registry: Registry, name: str) -> None:
    """sample_batch steps the environment (stateful_sampling): two calls differ, but
    init_params with the same seed restarts the run and the same batch comes back."""
    obj = registry.create(
        "objective", {"name": name, **registry.get("objective", name).test_config}
    )  # type: ignore[attr-defined]
    obj.prepare(torch.device("cpu"), torch.float32)
    assert obj.stateful_sampling
    batches = []
    for _ in range(2):
        params = obj.init_params(torch.Generator().manual_seed(0))
        batches.append(obj.sample_batch(torch.Generator().manual_seed(1), params))
    extra = obj.sample_batch(torch.Generator().manual_seed(1), params)
    for key in batches[0]:
        assert torch.equal(batches[0][key], batches[1][key]), key
    assert any(not torch.equal(batches[1][k], extra[k]) for k in extra)


@pytest.mark.parametrize(
    ("optimizer", "env_steps_after_10"),
    [
        ({"name": "adam", "lr": 1e-3}, 10),
        ({"name": "data_parallel", "base": "adam", "parallelism": 8}, 10),
        ({"name": "optex", "base": "adam", "parallelism": 4}, 10),
        # target's 4 true gradients are one sequential round and three free ones
        ({"name": "target", "base": "adam", "parallelism": 4}, 10),
    ],
)
def test_dqn_per_round_collects_the_same_data_for_any_worker_count(
    registry: Registry, optimizer: dict, env_steps_after_10: int
) -> None:
    spec = {"name": "dqn", **FAST_DQN, "collect": "per_round"}
    _, _, losses, before, after = run_steps(registry, spec, 10, optimizer=optimizer)
    assert after["env_steps"] - before["env_steps"] == env_steps_after_10
    assert all(math.isfinite(v) for v in losses)


def test_dqn_per_gradient_steps_the_env_once_per_gradient_and_is_unchanged(
    registry: Registry,
) -> None:
    """The default: W workers step the environment W times a round, and a round drawn by
    ``sample_round`` is exactly ``sample_batch`` point by point (the studies reproduce)."""
    dp = {"name": "data_parallel", "base": "adam", "parallelism": 8}
    _, _, _, before, after = run_steps(registry, {"name": "dqn", **FAST_DQN}, 10, optimizer=dp)
    assert after["env_steps"] - before["env_steps"] == 80
    draws = []
    for use_round in (False, True):
        obj = registry.create("objective", {"name": "dqn", **FAST_DQN})
        obj.prepare(torch.device("cpu"), torch.float32)
        gen = torch.Generator().manual_seed(3)
        points = [obj.init_params(gen) for _ in range(3)]
        if use_round:
            draws.append(obj.sample_round(gen, points, True))
        else:
            draws.append([obj.sample_batch(gen, p) for p in points])
    for first, second in zip(*draws, strict=True):
        for key in first:
            assert torch.equal(first[key], second[key])


def test_dqn_per_round_acts_with_the_first_point_of_a_round(registry: Registry) -> None:
    greedy = {"eps_start": 0.0, "eps_end": 0.0}  # after the warm-up, every action is greedy
    spec = {"name": "dqn", **FAST_DQN, **greedy, "collect": "per_round"}
    obj = registry.create("objective", spec)
    obj.prepare(torch.device("cpu"), torch.float32)
    gen = torch.Generator().manual_seed(0)
    point = obj.init_params(gen)
    # the same network with its output negated: the opposite greedy action in every state
    flipped = {k: -v if k.startswith("q2.") else v for k, v in point.items()}
    start = obj.env_steps
    batches = obj.sample_round(gen, [point, flipped], sequential=False)  # free: no env step
    assert obj.env_steps == start and len(batches) == 2
    for first in (point, flipped, point):
        last = obj.buffer.pos - 1
        batches = obj.sample_round(gen, [first, point if first is flipped else flipped], True)
        acted = obj.buffer.pos - 1
        assert acted == last + 1 and obj.env_steps == start + 1
        start = obj.env_steps
        obs = obj.buffer.obs[acted]
        assert obj.buffer.action[acted] == obj.greedy_action(first, obs)
        assert obj.greedy_action(first, obs) != obj.greedy_action(
            point if first is flipped else flipped, obs
        )
        assert [b["obs"].shape for b in batches] == [(FAST_DQN["batch_size"], 4)] * 2
    with pytest.raises(ConfigError, match=r"collect must be one of 'per_gradient', 'per_round'"):
        registry.create("objective", {"name": "dqn", "collect": "per_step"})
