"""``dqn``: Deep Q-learning (Mnih et al. 2015) on a gymnasium task, where the optimizer under
test updates the Q-network.

The params dict is the online Q-network (an MLP ``obs -> hidden -> hidden -> n_actions``).
The rest of DQN lives in the objective and advances inside :meth:`DQN.sample_batch`, which is
called once per gradient evaluation with the point being evaluated:

1. act ``env_steps`` times epsilon-greedily with *that* point's Q-network (epsilon decays
   linearly from ``eps_start`` to ``eps_end`` over ``eps_decay_steps`` environment steps) and
   store the transitions in the replay buffer (``buffer_size``, oldest overwritten);
   with ``collect = "per_round"`` this happens once per parallel round instead, with the
   round's first point (:meth:`DQN.sample_round`), see below;
2. every ``target_update`` environment steps, copy the evaluated point into the target network;
3. draw ``batch_size`` transitions uniformly (with replacement) and compute their TD targets
   ``r + gamma * (1 - terminated) * max_a' Q_target(s', a')`` with the target network.

The batch is a dict of tensors, so :meth:`DQN.loss` (the Huber TD loss) is pure and vmappable.
Every random draw (epsilon, random actions, the replay sample, the environment seed) comes from
the cell's generator, so one seed gives the same episodes and rewards.

**Data per sequential step.** With ``collect = "per_gradient"`` (the default, and what the
studies of 2026-12-07 measured) a method that evaluates W points per round (``data_parallel``,
``optex``) steps the environment W times per round, so it gets W times the transitions of its
sequential base per step, and a different learning problem: plain Adam given 16 env steps per
iteration collapses as ``data_parallel`` at W = 16 does (docs/benchmarks/optex-networks.md).
``collect = "per_round"`` steps the environment ``env_steps`` times per *sequential* round,
whatever W: every method then sees the same data per step, and only the gradients differ.

``init_params`` fills the buffer with ``learning_starts`` uniformly random steps (the usual
warm-up; their episodes count in the ``reward`` average, identically for every optimizer of one
seed), so ``evaluate``'s TD loss is defined from iteration 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from optkit.errors import ConfigError
from optkit.interfaces import Params
from optkit_rl.base import RLObjective
from optkit_rl.nets import init_mlp, mlp

Q = "q"
COLLECT = ("per_gradient", "per_round")
"""When DQN steps the environment: per gradient evaluation, or per sequential round."""


class ReplayBuffer:
    """A ring buffer of transitions, as numpy arrays of ``capacity`` rows."""

    def __init__(self, capacity: int, obs_dim: int) -> None:
        self.capacity = capacity
        self.obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.action = np.zeros(capacity, dtype=np.int64)
        self.reward = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.float32)
        self.size = 0
        self.pos = 0

    def add(
        self, obs: np.ndarray, action: int, reward: float, next_obs: np.ndarray, term: bool
    ) -> None:
        i = self.pos
        self.obs[i], self.action[i], self.reward[i] = obs, action, reward
        self.next_obs[i], self.terminated[i] = next_obs, float(term)
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)


class DQN(RLObjective):
    """Deep Q-learning on a gymnasium task; the params are the online Q-network (see the
    module docstring for the replay buffer, target network and epsilon schedule)."""

    name: ClassVar[str] = "dqn"
    test_config: ClassVar[dict[str, Any]] = {"learning_starts": 50, "batch_size": 8}
    summary: ClassVar[str] = (
        "DQN on a gymnasium task (target network, replay buffer, epsilon-greedy); metric reward"
    )

    def __init__(
        self,
        *,
        env: str = "CartPole-v1",
        hidden: int = 64,
        gamma: float = 0.99,
        batch_size: int = 64,
        buffer_size: int = 10_000,
        learning_starts: int = 500,
        env_steps: int = 1,
        target_update: int = 500,
        eps_start: float = 1.0,
        eps_end: float = 0.05,
        eps_decay_steps: int = 5_000,
        huber_delta: float = 1.0,
        max_steps: int | None = None,
        action_bins: int = 5,
        eval_episodes: int = 0,
        collect: str = "per_gradient",
    ) -> None:
        """Args:
        env: gymnasium id (CartPole-v1, Acrobot-v1, MountainCar-v0, Pendulum-v1, ...).
        hidden: width of the two hidden layers of the Q-network.
        gamma: discount factor.
        batch_size: replay transitions per gradient evaluation.
        buffer_size: replay capacity (transitions).
        learning_starts: uniformly random environment steps before the first minibatch.
        env_steps: environment steps per gradient evaluation.
        target_update: copy the online network into the target every this many env steps.
        eps_start / eps_end / eps_decay_steps: linear epsilon schedule over env steps.
        huber_delta: the Huber (smooth L1) threshold of the TD loss.
        max_steps: episode step limit (default: the environment's own TimeLimit).
        action_bins: actions of a discretized 1-D continuous action space (Pendulum).
        eval_episodes: greedy episodes run by ``evaluate`` (0: none).
        collect: ``"per_gradient"``: every gradient evaluation steps the environment
            ``env_steps`` times with its own point; ``"per_round"``: every sequential round
            does, with the round's first point (same data per step for any worker count).
        """
        where = f"objective '{self.name}'"
        for key, value in (
            ("hidden", hidden),
            ("batch_size", batch_size),
            ("buffer_size", buffer_size),
            ("env_steps", env_steps),
            ("target_update", target_update),
            ("eps_decay_steps", eps_decay_steps),
        ):
            if value < 1:
                raise ConfigError(f"{where}: {key} must be >= 1, got {value}")
        if collect not in COLLECT:
            raise ConfigError(
                f"{where}: collect must be one of {', '.join(map(repr, COLLECT))}, got {collect!r}"
            )
        if learning_starts < 1:
            raise ConfigError(f"{where}: learning_starts must be >= 1, got {learning_starts}")
        if not 0.0 <= gamma <= 1.0:
            raise ConfigError(f"{where}: gamma must be in [0, 1], got {gamma}")
        if not (0.0 <= eps_end <= 1.0 and 0.0 <= eps_start <= 1.0):
            raise ConfigError(f"{where}: eps_start and eps_end must be in [0, 1]")
        self.hidden = hidden
        self.gamma = gamma
        self.batch_size = batch_size
        self.buffer_size = buffer_size
        self.learning_starts = learning_starts
        self.steps_per_eval = env_steps
        self.collect = collect
        self.target_update = target_update
        self.eps_start, self.eps_end, self.eps_decay_steps = eps_start, eps_end, eps_decay_steps
        self.huber_delta = huber_delta
        self._setup_env(env, max_steps, action_bins, eval_episodes)
        self.buffer = ReplayBuffer(buffer_size, self.info.obs_dim)
        self._target: Params | None = None

    @property
    def sizes(self) -> list[int]:
        return [self.info.obs_dim, self.hidden, self.hidden, self.info.n_actions]

    def q_values(self, params: Params, obs: torch.Tensor) -> torch.Tensor:
        """Q-values ``(..., n_actions)`` for observations ``(..., obs_dim)``."""
        return mlp(params, Q, obs, 3)

    def init_params(self, generator: torch.Generator) -> Params:
        """The online Q-network; also restarts the run: the env re-seeded from ``generator``,
        the target network = these params, and the replay buffer filled with
        ``learning_starts`` uniformly random steps (drawn with ``generator``)."""
        params = init_mlp(Q, self.sizes, generator, self.device, self.dtype)
        self._reset_run(self._draw_seed(generator))
        self.buffer = ReplayBuffer(self.buffer_size, self.info.obs_dim)
        self._target = {k: v.detach().clone() for k, v in params.items()}
        with torch.no_grad():
            while self.buffer.size < self.learning_starts:  # warm-up: uniform random actions
                self._collect(generator, params, explore=1.0)
        return params

    def epsilon(self) -> float:
        frac = min(1.0, self.env_steps / self.eps_decay_steps)
        return self.eps_start + frac * (self.eps_end - self.eps_start)

    @torch.no_grad()
    def greedy_action(self, params: Params, obs: np.ndarray) -> int:
        q = self.q_values(params, torch.as_tensor(obs, device=self.device, dtype=self.dtype))
        return int(q.argmax())

    def _act(self, generator: torch.Generator, params: Params, explore: float) -> int:
        dev = generator.device
        if float(torch.rand((), generator=generator, device=dev)) < explore:
            return int(torch.randint(self.info.n_actions, (), generator=generator, device=dev))
        assert self._obs is not None
        return self.greedy_action(params, self._obs)

    def _collect(self, generator: torch.Generator, params: Params, explore: float) -> None:
        self.ensure_env()
        action = self._act(generator, params, explore)
        obs, nxt, reward, term = self._env_step(action)
        self.buffer.add(obs, action, reward, nxt, term)
        if self.env_steps % self.target_update == 0:
            self._target = {k: v.detach().clone() for k, v in params.items()}

    def _require_init(self, method: str) -> None:
        """A clear error for ``method`` called before :meth:`init_params` built the buffer."""
        if self._target is None:
            raise ConfigError(f"objective '{self.name}': call init_params before {method}")

    @torch.no_grad()
    def sample_batch(self, generator: torch.Generator, params: Params) -> dict[str, torch.Tensor]:
        """Interact with the env at ``params``, then a replay minibatch with TD targets:
        ``obs`` ``(B, obs_dim)``, ``action`` ``(B,)`` int64, ``target`` ``(B,)``."""
        self._require_init("sample_batch")
        for _ in range(self.steps_per_eval):
            self._collect(generator, params, explore=self.epsilon())
        return self.sample_batch_of_size(generator, params, self.batch_size)

    @torch.no_grad()
    def sample_round(
        self, generator: torch.Generator, points: Sequence[Params], sequential: bool
    ) -> list[dict[str, torch.Tensor]]:
        """The batches of one parallel round (:class:`~optkit.interfaces.RoundBatches`).
        ``collect = "per_gradient"``: :meth:`sample_batch` for each point in turn.
        ``"per_round"``: ``env_steps`` environment steps with ``points[0]`` for a sequential
        round (none for a round that is free of wall-clock), then one replay minibatch per
        point."""
        if self.collect == "per_gradient":
            return [self.sample_batch(generator, p) for p in points]
        self._require_init("sample_round")
        if sequential:
            for _ in range(self.steps_per_eval):
                self._collect(generator, points[0], explore=self.epsilon())
        return [self.sample_batch_of_size(generator, p, self.batch_size) for p in points]

    def sample_batch_of_size(
        self, generator: torch.Generator, params: Params, size: int
    ) -> dict[str, torch.Tensor]:
        """``size`` transitions drawn uniformly with replacement from the replay buffer as it
        stands, with their TD targets (:class:`~optkit.interfaces.SizedBatches`): no
        interaction with the env, so the buffer is the data set of the point and repeated
        draws are i.i.d. (what ``optkit diagnose noise`` measures). :meth:`sample_batch` is
        the env steps of one gradient evaluation, then this at ``batch_size``."""
        self._require_init("sample_batch_of_size")
        if size < 1:
            raise ConfigError(f"objective '{self.name}': a batch needs size >= 1, got {size}")
        idx = torch.randint(
            self.buffer.size, (size,), generator=generator, device=generator.device
        ).numpy(force=True)
        return self._td_batch(idx)

    @torch.no_grad()
    def _td_batch(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        assert self._target is not None
        buf, dev, dt = self.buffer, self.device, self.dtype
        next_obs = torch.as_tensor(buf.next_obs[idx], device=dev, dtype=dt)
        reward = torch.as_tensor(buf.reward[idx], device=dev, dtype=dt)
        term = torch.as_tensor(buf.terminated[idx], device=dev, dtype=dt)
        next_q = self.q_values(self._target, next_obs).max(dim=-1).values
        return {
            "obs": torch.as_tensor(buf.obs[idx], device=dev, dtype=dt),
            "action": torch.as_tensor(buf.action[idx], device=dev),
            "target": reward + self.gamma * (1.0 - term) * next_q,
        }

    def loss(self, params: Params, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Huber TD loss: mean over the batch of ``huber(Q(s, a) - target)``."""
        q = self.q_values(params, batch["obs"])
        q_sa = torch.take_along_dim(q, batch["action"].unsqueeze(-1), dim=-1).squeeze(-1)
        return F.huber_loss(q_sa, batch["target"], delta=self.huber_delta)

    @torch.no_grad()
    def evaluate(self, params: Params) -> dict[str, float]:
        """``loss``: the TD loss on the newest (up to 1,000) replay transitions with the
        current target network, plus the RL metrics."""
        if self._target is None or self.buffer.size == 0:
            raise ConfigError(f"objective '{self.name}': call init_params before evaluate")
        out = self._rl_metrics(params)
        n = min(self.buffer.size, 1000)
        idx = (self.buffer.pos - 1 - np.arange(n)) % self.buffer.capacity
        out["loss"] = float(self.loss(params, self._td_batch(idx)))
        return out
