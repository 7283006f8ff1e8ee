"""``policy_gradient``: REINFORCE with a learned value baseline on a gymnasium task.

The params dict holds a policy MLP (``pi*``: obs -> hidden -> hidden -> action logits) and a
value MLP (``v*``: obs -> hidden -> hidden -> 1). :meth:`PolicyGradient.sample_batch` rolls out
``episodes`` complete episodes with the evaluated point's policy (actions sampled with the
cell's generator) and returns them padded to the episode step limit ``T`` with a mask, so every
batch has the same shapes and :meth:`PolicyGradient.loss` is pure and vmappable.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from optkit.errors import ConfigError
from optkit.interfaces import Params
from optkit_rl.base import RLObjective
from optkit_rl.nets import init_mlp, mlp

PI, V = "pi", "v"


class PolicyGradient(RLObjective):
    """REINFORCE with a learned value baseline on a gymnasium task; the params are the policy
    and value networks."""

    name: ClassVar[str] = "policy_gradient"
    test_config: ClassVar[dict[str, Any]] = {"episodes": 1, "max_steps": 50}
    summary: ClassVar[str] = "REINFORCE with a value baseline on a gymnasium task; metric reward"

    def __init__(
        self,
        *,
        env: str = "CartPole-v1",
        hidden: int = 64,
        gamma: float = 0.99,
        episodes: int = 4,
        value_coef: float = 0.5,
        normalize_advantages: bool = True,
        max_steps: int | None = None,
        action_bins: int = 5,
        eval_episodes: int = 0,
    ) -> None:
        """Args:
        env: gymnasium id (CartPole-v1, Acrobot-v1, MountainCar-v0, Pendulum-v1, ...).
        hidden: width of the hidden layers of both networks.
        gamma: discount of the returns-to-go.
        episodes: complete episodes per gradient evaluation.
        value_coef: weight of the value-baseline regression loss.
        normalize_advantages: standardize advantages over the batch's valid steps.
        max_steps: episode step limit (default: the environment's own TimeLimit); also the
            padded length ``T`` of a batch.
        action_bins: actions of a discretized 1-D continuous action space (Pendulum).
        eval_episodes: greedy episodes run by ``evaluate`` (0: none).
        """
        where = f"objective '{self.name}'"
        if hidden < 1 or episodes < 1:
            raise ConfigError(f"{where}: hidden and episodes must be >= 1")
        if not 0.0 <= gamma <= 1.0:
            raise ConfigError(f"{where}: gamma must be in [0, 1], got {gamma}")
        if value_coef < 0:
            raise ConfigError(f"{where}: value_coef must be >= 0, got {value_coef}")
        self.hidden = hidden
        self.gamma = gamma
        self.episodes = episodes
        self.value_coef = value_coef
        self.normalize_advantages = normalize_advantages
        self._setup_env(env, max_steps, action_bins, eval_episodes)
        self._last_batch: dict[str, torch.Tensor] | None = None

    def init_params(self, generator: torch.Generator) -> Params:
        """Policy and value networks; also restarts the run: the env re-seeded from
        ``generator`` and one first batch of episodes collected with these params (so
        ``evaluate`` has a loss from iteration 0; those episodes count in ``reward``)."""
        o, h, a = self.info.obs_dim, self.hidden, self.info.n_actions
        params = init_mlp(PI, [o, h, h, a], generator, self.device, self.dtype)
        params.update(init_mlp(V, [o, h, h, 1], generator, self.device, self.dtype))
        self._reset_run(self._draw_seed(generator))
        self._last_batch = None
        self.sample_batch(generator, params)  # the first batch: evaluate's loss is defined
        return params

    def logits(self, params: Params, obs: torch.Tensor) -> torch.Tensor:
        """Action logits ``(..., n_actions)`` for observations ``(..., obs_dim)``."""
        return mlp(params, PI, obs, 3)

    @torch.no_grad()
    def greedy_action(self, params: Params, obs: np.ndarray) -> int:
        x = torch.as_tensor(obs, device=self.device, dtype=self.dtype)
        return int(self.logits(params, x).argmax())

    @torch.no_grad()
    def sample_batch(self, generator: torch.Generator, params: Params) -> dict[str, torch.Tensor]:
        """``episodes`` episodes at ``params``: ``obs`` ``(E, T, obs_dim)``, ``action``
        ``(E, T)`` int64, ``ret`` ``(E, T)`` discounted returns-to-go, ``mask`` ``(E, T)``
        (1 on real steps, 0 on padding)."""
        e_n, t_n = self.episodes, self.info.max_steps
        obs = np.zeros((e_n, t_n, self.info.obs_dim), dtype=np.float32)
        act = np.zeros((e_n, t_n), dtype=np.int64)
        rew = np.zeros((e_n, t_n), dtype=np.float32)
        mask = np.zeros((e_n, t_n), dtype=np.float32)
        self.ensure_env()
        for e in range(e_n):
            finished = len(self.episode_returns)
            t = 0
            while len(self.episode_returns) == finished:
                assert self._obs is not None
                x = torch.as_tensor(self._obs, device=self.device, dtype=self.dtype)
                probs = torch.softmax(self.logits(params, x), dim=-1).to(generator.device)
                action = int(torch.multinomial(probs, 1, generator=generator))
                o, _, r, _ = self._env_step(action)
                if t < t_n:
                    obs[e, t], act[e, t], rew[e, t], mask[e, t] = o, action, r, 1.0
                t += 1
        ret = np.zeros_like(rew)
        running = np.zeros(e_n, dtype=np.float32)
        for t in reversed(range(t_n)):
            running = rew[:, t] + self.gamma * running * mask[:, t]
            ret[:, t] = running
        dev, dt = self.device, self.dtype
        batch = {
            "obs": torch.as_tensor(obs, device=dev, dtype=dt),
            "action": torch.as_tensor(act, device=dev),
            "ret": torch.as_tensor(ret, device=dev, dtype=dt),
            "mask": torch.as_tensor(mask, device=dev, dtype=dt),
        }
        self._last_batch = batch
        return batch

    def loss(self, params: Params, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``-mean(log pi(a|s) * A) + value_coef * mean((G - V(s))^2)`` over valid steps,
        with advantages ``A = G - V(s)`` (V detached; standardized when configured)."""
        mask, ret = batch["mask"], batch["ret"]
        count = mask.sum().clamp_min(1.0)
        logp = torch.log_softmax(self.logits(params, batch["obs"]), dim=-1)
        logp_a = torch.take_along_dim(logp, batch["action"].unsqueeze(-1), dim=-1).squeeze(-1)
        value = mlp(params, V, batch["obs"], 3).squeeze(-1)
        adv = (ret - value).detach()
        if self.normalize_advantages:
            mean = (adv * mask).sum() / count
            std = (((adv - mean) ** 2 * mask).sum() / count).sqrt()
            adv = (adv - mean) / (std + 1e-8)
        policy_loss = -(logp_a * adv * mask).sum() / count
        value_loss = ((ret - value) ** 2 * mask).sum() / count
        return policy_loss + self.value_coef * value_loss

    @torch.no_grad()
    def evaluate(self, params: Params) -> dict[str, float]:
        """``loss``: the surrogate loss on the most recent batch of episodes, plus the RL
        metrics."""
        if self._last_batch is None:
            raise ConfigError(f"objective '{self.name}': call init_params before evaluate")
        out = self._rl_metrics(params)
        out["loss"] = float(self.loss(params, self._last_batch))
        return out
