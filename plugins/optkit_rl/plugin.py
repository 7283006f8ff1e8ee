"""Entry point of the built-in optkit_rl plugin (gymnasium is imported lazily, in methods)."""

from __future__ import annotations

from optkit.hookspecs import Register, hookimpl
from optkit_rl.dqn import DQN
from optkit_rl.policy_gradient import PolicyGradient


@hookimpl
def optkit_register_objectives(register: Register) -> None:
    register(DQN)
    register(PolicyGradient)
