"""Shared environment loop of the RL objectives: seeding, episode bookkeeping, metrics."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from optkit.errors import ConfigError
from optkit.interfaces import Objective, Params
from optkit_rl.envs import env_action, make_env


class RLObjective(Objective):
    """Shared environment loop of the RL objectives: seeding, episode bookkeeping, metrics.

    ``evaluate`` reports ``reward``: the cumulative average return of all training episodes
    finished so far (``nan`` before the first one ends; ``init_params`` runs a warm-up, so in
    practice it is defined from iteration 0), ``episodes``, ``env_steps`` and, when
    ``eval_episodes > 0``, ``eval_return``: the mean return of that many greedy episodes on
    fixed seeds (deterministic given the params).
    """

    vmappable: ClassVar[bool] = True
    stochastic = True
    test_marks: ClassVar[tuple[str, ...]] = ("rl",)
    stateful_sampling: ClassVar[bool] = True
    primary_metric: ClassVar[str | None] = "reward"
    """``sample_batch`` advances the run's state (environment, replay buffer, episode
    counters): two calls with equal generators differ by design. Reproducibility holds per run:
    ``init_params`` with the same seed restarts the run, and the same sequence of
    ``sample_batch`` calls then returns the same batches and rewards."""

    def _setup_env(
        self, env: str, max_steps: int | None, action_bins: int, eval_episodes: int
    ) -> None:
        self.env_id = env
        self.max_steps = max_steps
        self.action_bins = action_bins
        self.eval_episodes = eval_episodes
        if eval_episodes < 0:
            raise ConfigError(f"objective '{self.name}': eval_episodes must be >= 0")
        probe, self.info = make_env(
            env, f"objective '{self.name}'", max_steps=max_steps, action_bins=action_bins
        )
        probe.close()
        self._env: Any = None
        self._reset_run(seed=0)

    def _reset_run(self, seed: int) -> None:
        """Forget all interaction; the next environment reset uses ``seed``."""
        if self._env is not None:
            self._env.close()
        self._env = None
        self._env_seed = seed
        self._obs: np.ndarray | None = None
        self._episode_return = 0.0
        self.episode_returns: list[float] = []
        self.env_steps = 0

    def _env_step(self, action: int) -> tuple[np.ndarray, np.ndarray, float, bool]:
        """One environment step from the current observation; resets after an episode ends.
        Returns ``(obs, next_obs, reward, terminated)``."""
        self.ensure_env()
        assert self._obs is not None
        obs = self._obs
        nxt, reward, term, trunc, _ = self._env.step(env_action(self.info, action))
        nxt = np.asarray(nxt, dtype=np.float32)
        self._episode_return += float(reward)
        self.env_steps += 1
        if term or trunc:
            self.episode_returns.append(self._episode_return)
            self._episode_return = 0.0
            reset_obs, _ = self._env.reset()  # continues the env's seeded RNG
            self._obs = np.asarray(reset_obs, dtype=np.float32)
        else:
            self._obs = nxt
        return obs, nxt, float(reward), bool(term)

    def ensure_env(self) -> None:
        """Create the training environment and reset it with the run's seed (first step)."""
        if self._env is None:
            self._env, _ = make_env(
                self.env_id, self.name, max_steps=self.max_steps, action_bins=self.action_bins
            )
            obs, _ = self._env.reset(seed=self._env_seed)
            self._obs = np.asarray(obs, dtype=np.float32)

    def _draw_seed(self, generator: torch.Generator) -> int:
        return int(torch.randint(2**31 - 1, (1,), generator=generator, device=generator.device))

    def greedy_action(self, params: Params, obs: np.ndarray) -> int:
        raise NotImplementedError

    @torch.no_grad()
    def greedy_return(self, params: Params, episodes: int, seed: int = 10_000) -> float:
        """Mean return of ``episodes`` greedy episodes on seeds ``seed, seed+1, ...``."""
        env, _ = make_env(
            self.env_id, self.name, max_steps=self.max_steps, action_bins=self.action_bins
        )
        total = 0.0
        try:
            for k in range(episodes):
                obs, _ = env.reset(seed=seed + k)
                done = False
                while not done:
                    action = self.greedy_action(params, np.asarray(obs, dtype=np.float32))
                    obs, reward, term, trunc, _ = env.step(env_action(self.info, action))
                    total += float(reward)
                    done = bool(term or trunc)
        finally:
            env.close()
        return total / episodes

    def _rl_metrics(self, params: Params) -> dict[str, float]:
        rets = self.episode_returns
        out = {
            "reward": float(np.mean(rets)) if rets else float("nan"),
            "episodes": float(len(rets)),
            "env_steps": float(self.env_steps),
        }
        if self.eval_episodes > 0:
            out["eval_return"] = self.greedy_return(params, self.eval_episodes)
        return out

    def metric_direction(self) -> dict[str, str]:
        return {
            "loss": "min",
            "reward": "max",
            "eval_return": "max",
            "episodes": "max",
            "env_steps": "max",
        }
