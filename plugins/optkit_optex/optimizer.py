"""The ``optex`` optimizer: approximately parallelized iterations of a first-order method.

A thin front end of :class:`~optkit_optex.engine.Engine` (the iteration itself is described
there) over params dicts and an :class:`~optkit.oracle.Oracle`: one :meth:`OptEx.step` plans
the round on the engine, hands the oracle the N x ``batches_per_point`` points as params dicts
(views of the engine's static point buffer, built once), and feeds the evaluation back.
``sequential_steps += 1`` and ``grad_evals += N x batches_per_point`` per iteration, counted by
the oracle.

The base rule is a registered first-order optimizer: on one flat tensor with torch's own
implementation when it is an elementwise ``torch.optim`` rule and ``fused`` (the default;
:class:`~optkit_optex.rules.TorchFlatRule`, the path that runs from CUDA graphs on a GPU),
through its functional ``update`` otherwise (:class:`~optkit_optex.rules.GenericRule`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from optkit_baselines.parallel import build_base

from optkit.context import RunContext
from optkit.errors import ConfigError
from optkit.interfaces import (
    BASE_RULE_ALIASES,
    FirstOrderOptimizer,
    Objective,
    Optimizer,
    Params,
    StepInfo,
    Support,
)
from optkit.oracle import Oracle
from optkit_optex.config import OptExConfig, with_option_keywords
from optkit_optex.engine import Engine, EngineState
from optkit_optex.estimator import KernelGradientEstimator
from optkit_optex.flat import Flattener
from optkit_optex.rounds import expand
from optkit_optex.rules import base_rule, flat_rule_supported


@dataclass
class OptExState:
    """The engine's state, the params layout and the views handed to the oracle.

    ``point_views``: the N params dicts of views into the engine's static points ``P``, built
    with the state. ``returned``: the params dict the last step returned and the flat ``(d,)``
    tensor its values are views of (so the next step copies that tensor instead of
    concatenating)."""

    engine: EngineState
    flat: Flattener
    point_views: list[Params]
    returned: tuple[Params, torch.Tensor] | None = None

    @property
    def estimator(self) -> KernelGradientEstimator:
        return self.engine.estimator

    @property
    def iteration(self) -> int:
        return self.engine.iteration


class OptEx(Optimizer):
    """OptEx over any registered first-order base optimizer (see the module docstring).

    Its config keys are ``base``, ``base_config``, ``fused``, ``cuda_graph``,
    ``device_solve``, ``config`` (an :class:`~optkit_optex.config.OptExConfig` whole, from
    Python) and every OptEx option (:data:`~optkit_optex.config.OPTION_KEYS`, with the
    defaults of :class:`~optkit_optex.config.OptExConfig` and
    :class:`~optkit_optex.config.EstimatorConfig`, where they are documented).
    """

    name: ClassVar[str] = "optex"
    summary: ClassVar[str] = (
        "OptEx: N-1 proxy steps on kernel-estimated gradients + one parallel round of N"
    )
    hyper_aliases: ClassVar[dict[str, str]] = BASE_RULE_ALIASES

    @with_option_keywords
    def __init__(
        self,
        *,
        base: str = "adam",
        base_config: dict[str, Any] | None = None,
        fused: bool = True,
        cuda_graph: bool = True,
        device_solve: bool | Literal["auto"] = "auto",
        shared_batches: bool = False,
        run_context: RunContext | None = None,
        config: OptExConfig | None = None,
        **options: Any,
    ) -> None:
        """Args:
        base / base_config: a registered first-order optimizer and its keyword config.
        fused: run a ``torch.optim``-backed elementwise base on one flat tensor
            (:class:`~optkit_optex.rules.TorchFlatRule`); other bases always take the
            generic rule.
        cuda_graph: on CUDA, capture the fused proxy loop (with the estimator's device
            solve) and the estimator's append in CUDA graphs and replay them.
        device_solve: compute the estimator's solve on the device (no host
            synchronisation; captured with the proxy loop) and graph its append; ``"auto"``
            (default): on CUDA, where it measured 1.6-1.8x faster per iteration than the host
            solve, and not on the CPU, where the host solve is a little cheaper.
        shared_batches: evaluate every point of a round on the same minibatch(es) (the
            ``batches_per_point`` draws at the round's first point, common to all points)
            instead of one draw per evaluation: the points' observed losses then differ only
            by where the points are, which is what ``next_iterate = "best"`` compares; the
            round reads 1/P of the data. An ablation (docs/optex.md).
        run_context: the caller's context (passed by ``Registry.create``, not a config key):
            ``base`` comes from its registry.
        config: the OptEx options whole (for a caller in Python), instead of ``**options``.
        **options: the OptEx options by name (:meth:`~optkit_optex.config.OptExConfig.create`;
            the task-file keys).
        """
        if config is None:
            config = OptExConfig.create(f"optimizer '{self.name}'", **options)
        elif options or not isinstance(config, OptExConfig):
            raise ConfigError(
                "optimizer 'optex': give the OptEx options either as config (an OptExConfig)"
                f" or as keys, not both (got config={config!r} and {sorted(options)})"
            )
        self.config = config
        for key, value in (
            ("fused", fused),
            ("cuda_graph", cuda_graph),
            ("shared_batches", shared_batches),
        ):
            if not isinstance(value, bool):
                raise ConfigError(f"optimizer 'optex': {key} must be true or false, got {value!r}")
        if not (isinstance(device_solve, bool) or device_solve == "auto"):
            raise ConfigError(
                "optimizer 'optex': device_solve must be true, false or 'auto', got"
                f" {device_solve!r}"
            )
        self.base: FirstOrderOptimizer = build_base(base, base_config, self.name, run_context)
        self.parallelism, self.workers = self.config.split[0], self.config.round_size
        self.fused = fused and flat_rule_supported(self.base)
        self.cuda_graph, self.device_solve = cuda_graph, device_solve
        self.shared_batches = shared_batches
        self.engine = Engine(self.config, device_solve=device_solve, cuda_graph=cuda_graph)

    def supports(self, objective: Objective) -> Support:
        return self.base.supports(objective)

    def init(self, params: Params) -> OptExState:
        flat = Flattener(params)
        x0 = flat.flatten(params).detach()
        state = self.engine.init(x0, base_rule(self.base, flat, fused=self.fused))
        views = [flat.unflatten(row) for row in state.P]  # every row: any split of W
        return OptExState(state, flat, views)

    def step(
        self, params: Params, state: OptExState, oracle: Oracle
    ) -> tuple[Params, OptExState, StepInfo]:
        """One OptEx iteration: one oracle round of N x ``batches_per_point`` evaluations; no
        host synchronisation besides the oracle's check and one read of the N losses (on the
        fused path)."""
        planned = self.engine.plan(self._flat_start(params, state), state.engine)
        counts = planned.counts
        views = state.point_views[: len(counts)]
        points = views if len(counts) == sum(counts) else expand(views, counts)
        batches = None
        if self.shared_batches:  # the same K draws at every point: losses compare positions
            drawn = oracle.sample_batches([views[0]] * max(counts))
            batches = [drawn[j] for count in counts for j in range(count)]
        evaluation = oracle.evaluate(points, batches=batches)
        # the iteration's one read: the N losses (with the runner's deferred check on a GPU,
        # it is also where the host waits for the round's gradients)
        losses = evaluation.losses.cpu()
        grads = state.flat.flatten_many(evaluation.grads)
        new, _, info = self.engine.update(state.engine, planned, grads, losses)
        out = state.flat.unflatten(new)
        state.returned = (out, new)
        return out, state, StepInfo(loss=info.loss, extras=info.extras)

    @staticmethod
    def _flat_start(params: Params, state: OptExState) -> torch.Tensor:
        """``(d,)`` the start point: the flat tensor behind the dict the last step returned
        when ``params`` still holds exactly those views (no concatenation), else a flatten."""
        if state.returned is not None:
            last, flat_last = state.returned
            if params.keys() == last.keys() and all(params[k] is v for k, v in last.items()):
                return flat_last
        return state.flat.flatten(params)
