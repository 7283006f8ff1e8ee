"""gymnasium environments for the RL objectives: creation with a clear error for a bad id,
and a discrete action view of 1-D continuous action spaces (Pendulum).

gymnasium is imported inside the functions so that loading the plugin stays fast.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import numpy as np

from optkit.errors import ConfigError

CLASSIC_CONTROL = ("CartPole-v1", "Acrobot-v1", "MountainCar-v0", "Pendulum-v1")
"""The four tasks of the DQN study; any gymnasium id with a flat Box observation and a
Discrete (or 1-D Box, discretized) action space works."""


@dataclass(frozen=True)
class EnvInfo:
    """Shapes of an environment as the objectives see it.

    Attributes:
        obs_dim: length of the flat observation vector.
        n_actions: number of discrete actions.
        max_steps: episode step limit (the TimeLimit of the registration, or the config).
        action_values: for a discretized Box action space, the ``(n_actions,)`` action values;
            ``None`` for a Discrete space.
    """

    obs_dim: int
    n_actions: int
    max_steps: int
    action_values: np.ndarray | None


def check_env_id(env_id: str, where: str) -> None:
    """ConfigError naming valid ids when gymnasium has no environment ``env_id``."""
    import gymnasium

    if env_id in gymnasium.envs.registry:
        return
    known = sorted(gymnasium.envs.registry)
    close = difflib.get_close_matches(env_id, known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(
        f"{where}: unknown gymnasium environment '{env_id}'.{hint} Classic-control tasks that"
        f" need no extra packages: {', '.join(CLASSIC_CONTROL)}"
    )


def make_env(
    env_id: str, where: str, *, max_steps: int | None = None, action_bins: int = 5
) -> tuple[Any, EnvInfo]:
    """``gymnasium.make(env_id)`` and its :class:`EnvInfo`.

    Raises ConfigError for an unknown id, an environment whose extra dependencies are missing
    (Box2D, MuJoCo), or one whose spaces the objectives cannot handle.
    """
    import gymnasium
    from gymnasium import spaces

    check_env_id(env_id, where)
    kwargs: dict[str, Any] = {}
    if max_steps is not None:
        kwargs["max_episode_steps"] = max_steps
    try:
        env = gymnasium.make(env_id, **kwargs)
    except gymnasium.error.DependencyNotInstalled as exc:
        raise ConfigError(
            f"{where}: environment '{env_id}' needs extra packages ({exc});"
            f" the classic-control tasks need none: {', '.join(CLASSIC_CONTROL)}"
        ) from exc
    obs_space, act_space = env.observation_space, env.action_space
    if not isinstance(obs_space, spaces.Box) or len(obs_space.shape) != 1:
        env.close()
        raise ConfigError(
            f"{where}: environment '{env_id}' has observation space {obs_space}; a flat Box is"
            " needed"
        )
    values: np.ndarray | None = None
    if isinstance(act_space, spaces.Discrete):
        n_actions = int(act_space.n)
    elif isinstance(act_space, spaces.Box) and act_space.shape == (1,):
        if action_bins < 2:
            env.close()
            raise ConfigError(f"{where}: action_bins must be >= 2, got {action_bins}")
        low, high = float(act_space.low[0]), float(act_space.high[0])
        values = np.linspace(low, high, action_bins, dtype=np.float32)
        n_actions = action_bins
    else:
        env.close()
        raise ConfigError(
            f"{where}: environment '{env_id}' has action space {act_space}; a Discrete or a"
            " 1-D Box (discretized into action_bins values) is needed"
        )
    limit = env.spec.max_episode_steps if env.spec is not None else None
    steps = int(max_steps or limit or 1000)
    return env, EnvInfo(int(obs_space.shape[0]), n_actions, steps, values)


def env_action(info: EnvInfo, action: int) -> Any:
    """The action to pass to ``env.step`` for discrete action index ``action``."""
    if info.action_values is None:
        return int(action)
    return np.array([info.action_values[action]], dtype=np.float32)
