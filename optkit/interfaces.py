"""The interfaces of optkit and the small records they exchange.

Everything here is functional and ``torch.func``-friendly:

* parameters are a flat ``dict[str, Tensor]`` (a *params dict*; leaves of any shape);
* an :class:`Objective`'s ``loss`` is pure, so ``torch.func.grad`` and ``torch.func.vmap``
  can evaluate N parameter points in one batched call;
* randomness never comes from global state: every method that draws random numbers receives
  an explicit ``torch.Generator``.

Implementations register through pluggy (see :mod:`optkit.hookspecs`). Each class has a class
attribute ``name`` (the registry key) and takes its configuration as keyword-only ``__init__``
arguments; the registry validates a task file's keys and types against that signature.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import torch

from optkit.context import RunContext

if TYPE_CHECKING:
    from optkit.oracle import Oracle

Params = dict[str, torch.Tensor]
"""A point in parameter space: name -> tensor (any shape, one dtype/device per run)."""

Batch = Any
"""What :meth:`Objective.sample_batch` returns: ``None`` or a pytree (dict / tuple / list) of
tensors. The vmap executor stacks the N batches of one round leaf by leaf (new leading dim N),
so every batch of one objective must have the same structure and leaf shapes."""


@dataclass(frozen=True)
class Support:
    """Answer of a ``supports(...)`` capability check: ``ok`` and, when not, a reason."""

    ok: bool
    reason: str = ""

    @classmethod
    def yes(cls) -> Support:
        return cls(True)

    @classmethod
    def no(cls, reason: str) -> Support:
        return cls(False, reason)

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True)
class Requirement:
    """An optional package a plugin needs, and the optkit extra that installs it.

    Attributes:
        module: the top-level import name (``"botorch"``, ``"PIL"``).
        extra: the extra of ``pip install 'optkit[EXTRA]'`` that provides it (``"bo"``).
    """

    module: str
    extra: str

    def available(self) -> bool:
        """Whether ``module`` can be imported here (found on the path; not imported)."""
        import importlib.util

        try:
            return importlib.util.find_spec(self.module) is not None
        except (ImportError, ValueError):
            return False

    def missing_reason(self, who: str) -> str:
        """The incompatibility ``optkit check`` reports when the package is missing."""
        return (
            f"{who} needs the Python package '{self.module}', which is not installed:"
            f" pip install 'optkit[{self.extra}]'"
        )


class Plugin:
    """Common base of every registered class.

    Class attributes (declared here so that tools can rely on them):
        name: the registry key; summary: the one line ``optkit plugins`` shows.
        kind: ``objective`` | ``optimizer`` | ``hyperoptimizer`` | ``executor`` | ``launcher``.
        requires: optional packages the plugin imports lazily, each with the extra that
            installs it. ``optkit check`` turns a missing one into an incompatibility that
            names the extra (the cell is skipped with that reason), before anything runs.
        test_config: a small configuration for the contract kits of :mod:`optkit.testing`
            (a small dimension, a data slice); ``{}`` means the defaults.
        test_marks: pytest marker names the contract tests of this class get
            (``("nlp",)`` for one that needs a download).

    Instance attribute:
        optkit_spec: the ``{"name": ..., **config}`` :meth:`optkit.registry.Registry.create`
            built this instance from (``None`` for an instance built by hand). A launcher or
            a remote executor rebuilds the component from it instead of pickling its data.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    requires: ClassVar[tuple[Requirement, ...]] = ()
    test_config: ClassVar[dict[str, Any]] = {}
    test_marks: ClassVar[tuple[str, ...]] = ()
    optkit_spec: dict[str, Any] | None = None

    @classmethod
    def missing_requirements(cls) -> list[Requirement]:
        """The entries of :attr:`requires` that are not installed here."""
        return [r for r in cls.requires if not r.available()]


# --------------------------------------------------------------------------------------------
# Objective
# --------------------------------------------------------------------------------------------


class Objective(Plugin, abc.ABC):
    """A differentiable training problem.

    Life cycle, driven by the runner for each cell (objective x optimizer x seed)::

        obj = ObjectiveClass(**config)      # cheap: validate config, no data loading
        obj.prepare(device, dtype)          # load data / models once, move to device
        params = obj.init_params(gen)       # gen: torch.Generator seeded from the cell's seed
        batch = obj.sample_batch(gen, params)
        loss = obj.loss(params, batch)      # scalar; pure
        metrics = obj.evaluate(params)      # {"loss": ..., other metrics}

    Attributes:
        optimum: known optimal value of the loss (synthetic functions) or ``None``.
        vmappable: ``True`` when ``loss`` can run under ``torch.func.vmap`` (no data-dependent
            Python control flow, no in-place ops on inputs, no ``.item()``).
        graph_safe: ``True`` when a CUDA graph of ``loss`` and its gradient, captured once,
            replays correctly on new params and batches copied into the captured inputs
            (the ``vmap`` executor's ``cuda_graph``): no host syncs, no Python control flow
            or shapes that depend on values, and every other tensor ``loss`` reads is fixed
            or updated in place, never replaced. Default ``False``: an objective opts in.
        stochastic: ``True`` when ``sample_batch`` draws random minibatches / noise.
        stateful_sampling: ``True`` when ``sample_batch`` advances state of the objective's
            own (an RL environment, a replay buffer): reproducibility then means that a run
            restarted from the same seed (``init_params`` again) draws the same batches.
    """

    kind: ClassVar[str] = "objective"
    vmappable: ClassVar[bool] = True
    graph_safe: ClassVar[bool] = False
    stateful_sampling: ClassVar[bool] = False
    primary_metric: ClassVar[str | None] = None
    """The metric of :meth:`evaluate` that reports show by default (``None``: ``gap`` when
    reported, else ``loss``), e.g. ``"test_error"`` or ``"reward"``."""
    stochastic: bool = False
    optimum: float | None = None

    device: torch.device = torch.device("cpu")
    """Where the objective's tensors live: CPU until :meth:`prepare` says otherwise."""
    dtype: torch.dtype = torch.float32
    """The floating-point type of the objective's tensors: float32 until :meth:`prepare`."""
    run_context: RunContext | None = None
    """The :class:`~optkit.context.RunContext` of the last :meth:`prepare` (runner-driven)."""

    def prepare(self, device: torch.device, dtype: torch.dtype) -> None:
        """Load data and models onto ``device``. Called once per cell before ``init_params``.

        The default stores ``device`` and ``dtype``; override to load data (call ``super()``).
        The runner calls it through :func:`optkit.context.prepare_objective`, which first sets
        :attr:`run_context` to the cell's :class:`RunContext` (registry, seed); an override may
        also declare a keyword ``run_context: RunContext | None = None`` to receive it as an
        argument. Must be idempotent: the runner may call it more than once on one instance.
        """
        self.device = device
        self.dtype = dtype

    @abc.abstractmethod
    def init_params(self, generator: torch.Generator) -> Params:
        """Initial parameters, drawn with ``generator`` only (same seed -> same params).

        Returns:
            A params dict of leaf tensors on ``self.device`` (``requires_grad`` not needed).
        """

    def sample_batch(self, generator: torch.Generator, params: Params) -> Batch:
        """Draw the randomness of one gradient evaluation at ``params``.

        A data minibatch (indices or tensors), gradient noise, RL transitions, or ``None``
        for a deterministic objective (the default). Uses ``generator`` only. May depend on
        ``params`` (RL rollouts collect data with the current policy).
        """
        return None

    @abc.abstractmethod
    def loss(self, params: Params, batch: Batch) -> torch.Tensor:
        """The training loss at ``params`` on ``batch``: a 0-dim tensor.

        Pure: no in-place change of ``params`` or ``batch``, no randomness beyond ``batch``,
        so ``torch.func.grad(loss)`` is the stochastic gradient and ``vmap`` batches points.
        """

    @abc.abstractmethod
    def evaluate(self, params: Params) -> dict[str, float]:
        """Metrics at ``params`` (no gradient). Must contain ``"loss"``: the objective's
        deterministic reference loss (full-data, noise-free or held-out, as the objective
        documents). Synthetic objectives add ``"gap"`` = loss - optimum.
        """

    def data_artifacts(self) -> tuple[str, ...]:
        """Names of the :mod:`optkit.data` artifacts :meth:`prepare` reads (default none).

        Lets tools say before a run which data must be fetched or added, and lets the
        contract tests tell an objective whose data no source serves today."""
        return ()

    def metric_direction(self) -> dict[str, str]:
        """``{"metric": "min" | "max"}`` for the metrics of :meth:`evaluate` (default min)."""
        return {"loss": "min"}


@runtime_checkable
class SizedBatches(Protocol):
    """Optional capability of an :class:`Objective`: minibatches of any chosen size.

    ``optkit diagnose noise`` estimates the gradient noise scale from gradients at several
    batch sizes, so it needs objectives with:

    Attributes:
        batch_size: the size :meth:`Objective.sample_batch` draws (the task's batch size), in
            the objective's unit of one *example*: an image, a text window, one draw of
            synthetic gradient noise.

    and :meth:`sample_batch_of_size`. Contract: ``sample_batch(g, p)`` draws exactly what
    ``sample_batch_of_size(g, p, batch_size)`` draws (an objective whose data grows as it
    trains, such as DQN's replay buffer, may first add to it in ``sample_batch``; the sized
    draw itself never does); examples are i.i.d. (drawn with
    replacement), so a size-``b`` batch's gradient has covariance ``Sigma / b`` for the
    per-example covariance ``Sigma``; batches of one size have one structure and leaf shapes
    (vmap stacks them). Check with :func:`sized_batches`.
    """

    batch_size: int

    def sample_batch_of_size(self, generator: torch.Generator, params: Params, size: int) -> Batch:
        """A batch of ``size >= 1`` i.i.d. examples, drawn with ``generator`` only."""
        ...


def sized_batches(objective: Objective) -> Support:
    """Whether ``objective`` implements :class:`SizedBatches`; the reason when it does not."""
    if isinstance(objective, SizedBatches) and isinstance(objective.batch_size, int):
        return Support.yes()
    return Support.no(
        f"objective '{objective.name}' ({type(objective).__qualname__}) cannot draw a batch of a"
        " chosen size: it does not implement optkit.interfaces.SizedBatches (an int"
        " `batch_size` and `sample_batch_of_size(generator, params, size)`)"
    )


@runtime_checkable
class RoundBatches(Protocol):
    """Optional capability of an :class:`Objective`: draws the batches of a whole parallel
    round at once, knowing it is one round.

    :class:`~optkit.oracle.Oracle` calls :meth:`sample_round` instead of
    :meth:`Objective.sample_batch` once per point when an objective has it. It is for
    objectives whose data *grows* as they are sampled, where a point-by-point draw would give
    a method with N workers N times the data of its sequential base: DQN's environment steps
    go into a replay buffer every later gradient reads, so DQN collects per round (or per
    gradient, its ``collect`` option says). Contract: the batches are those that
    ``sample_batch`` would give for ``points``, in order, except for what the objective adds
    to its own data; ``sequential`` is ``False`` for a round an idealized baseline gets free of
    wall-clock (``target``'s extra true gradients).
    """

    def sample_round(
        self, generator: torch.Generator, points: Sequence[Params], sequential: bool
    ) -> list[Batch]:
        """One batch per point of a round, drawn with ``generator`` only."""
        ...


# --------------------------------------------------------------------------------------------
# Optimizer
# --------------------------------------------------------------------------------------------


BASE_RULE_ALIASES: dict[str, str] = {
    key: f"base_config.{key}" for key in ("lr", "momentum", "weight_decay", "betas", "eps")
}
"""``hyper_aliases`` of a wrapper whose update rule is a ``base`` optimizer configured by a
``base_config`` table (``optex``, ``data_parallel``, ``target``): plain names tune the base."""


class StepInfo:
    """What one optimizer iteration reports besides the new params (free-form extras).

    ``loss`` may be given as a float or as a one-element tensor; it reads as a float either
    way. A tensor is read (and, on a GPU, waited for) only when ``loss`` is first read, so a
    step need not stop the host for a number the caller may not look at: the runner reads it
    only at its evaluation rows.
    """

    __slots__ = ("_loss", "extras")

    def __init__(
        self, loss: float | torch.Tensor = float("nan"), extras: dict[str, float] | None = None
    ) -> None:
        self._loss = loss
        self.extras: dict[str, float] = {} if extras is None else extras

    @property
    def loss(self) -> float:
        """The stochastic training loss the iteration observed (read once, then kept)."""
        if isinstance(self._loss, torch.Tensor):
            self._loss = float(self._loss)
        return self._loss

    def __repr__(self) -> str:
        return f"StepInfo(loss={self._loss!r}, extras={self.extras!r})"


class Optimizer(Plugin, abc.ABC):
    """An iterative optimizer over a params dict.

    One call of :meth:`step` is one *iteration* as the runner counts them; the optimizer
    gets every loss and gradient through ``oracle``, which counts gradient evaluations and
    sequential rounds (see :class:`optkit.oracle.Oracle`).
    """

    kind: ClassVar[str] = "optimizer"
    first_order: ClassVar[bool] = True
    hyper_aliases: ClassVar[dict[str, str]] = {}
    """Plain hyperparameter names (as a task's ``[tuning].space`` writes them) mapped to this
    optimizer's own dotted config keys. A wrapper of a base rule declares
    ``{"lr": "base_config.lr"}`` so that ``lr`` tunes its base's learning rate; a name not
    listed means the config key of the same name (``lr`` -> ``lr`` for a plain rule)."""

    @abc.abstractmethod
    def init(self, params: Params) -> Any:
        """Optimizer state for starting at ``params`` (moments, history, ...)."""

    @abc.abstractmethod
    def step(self, params: Params, state: Any, oracle: Oracle) -> tuple[Params, Any, StepInfo]:
        """One iteration: returns new params (fresh tensors, inputs untouched), new state and
        info. ``info.loss`` is the stochastic training loss the iteration observed."""

    def supports(self, objective: Objective) -> Support:
        """Whether this optimizer can run on ``objective``; the reason when it cannot."""
        return Support.yes()


class FirstOrderOptimizer(Optimizer):
    """A first-order update rule usable as a *base* by meta-methods (OptEx, data_parallel).

    Besides ``step`` it exposes the bare update ``(params, grads, state) -> (params, state)``
    so that a wrapper can feed it estimated or averaged gradients, and ``clone_state`` so a
    wrapper can branch the state.
    """

    @abc.abstractmethod
    def update(self, params: Params, grads: Params, state: Any) -> tuple[Params, Any]:
        """Apply one update with the given gradients. May mutate and return ``state``;
        must not mutate ``params`` or ``grads``."""

    @abc.abstractmethod
    def clone_state(self, state: Any) -> Any:
        """An independent copy of ``state`` (later updates of one do not touch the other)."""

    def step(self, params: Params, state: Any, oracle: Oracle) -> tuple[Params, Any, StepInfo]:
        evaluation = oracle.evaluate([params])
        new_params, state = self.update(params, evaluation.grads[0], state)
        return new_params, state, StepInfo(loss=evaluation.losses)


# --------------------------------------------------------------------------------------------
# Executor
# --------------------------------------------------------------------------------------------


@dataclass
class Evaluation:
    """Losses and gradients at N points.

    Attributes:
        losses: shape ``(N,)``, the stochastic loss at each point.
        grads: N params dicts, each with the shapes of the corresponding point.
    """

    losses: torch.Tensor
    grads: list[Params]


class Executor(Plugin, abc.ABC):
    """How N loss-and-gradient evaluations run: in a loop, in one vmapped call, on Ray actors."""

    kind: ClassVar[str] = "executor"

    def bind(self, objective: Objective) -> None:
        """Called once per cell before any evaluation (e.g. to ship the objective to workers)."""

    @abc.abstractmethod
    def evaluate(
        self, objective: Objective, points: Sequence[Params], batches: Sequence[Batch]
    ) -> Evaluation:
        """Loss and gradient of ``objective.loss(points[i], batches[i])`` for every i.

        ``len(points) == len(batches) == N >= 1``. Results must equal the serial executor's up
        to floating-point summation order.
        """

    def supports(self, objective: Objective) -> Support:
        return Support.yes()

    def diagnostics(self) -> list[dict[str, Any]]:
        """Events worth keeping in the cell's ``end`` row as ``executor_events`` (e.g. Ray
        actors restarted mid-run), oldest first; each a JSON-plain dict. Default: none."""
        return []

    def close(self) -> None:
        """Release workers (called at the end of a run)."""


# --------------------------------------------------------------------------------------------
# HyperOptimizer
# --------------------------------------------------------------------------------------------


@dataclass
class TrialResult:
    """The outcome of one inner run.

    Attributes:
        config: the hyperparameter values tried (flat, dotted keys such as ``optimizer.lr``).
        score: the validation score to *minimize* (``nan`` when the trial failed).
        metrics: final metrics of the inner run.
        error: the error message of a failed trial, else ``None``.
        cost_s: wall-clock seconds of the trial.
    """

    config: dict[str, Any]
    score: float
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    cost_s: float = 0.0


@dataclass
class HyperResult:
    """What a hyperoptimizer returns: the chosen configuration and its trace."""

    best_config: dict[str, Any]
    best_score: float
    trials: list[TrialResult] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class HyperContext:
    """Everything a hyperoptimizer may use, provided by the runner.

    Attributes:
        objective_spec / optimizer_spec: the inner pairing's ``{"name": ..., **config}``.
        budget: the inner run's budget (``{"iterations": ..., ...}``).
        seed: the cell's seed; ``generator`` is seeded from it.
        run_trial: runs the inner pairing with dotted-key overrides applied
            (``{"optimizer.lr": 0.1}``) and returns the :class:`TrialResult`; the runner
            records its rows. Black-box hyperoptimizers need only this.
        create_objective / create_optimizer: build inner instances with overrides; gradient-
            based hyperoptimizers (Flexora) drive the inner loop themselves.
        record: append a free-form trace row (merged into the results rows).
        completed: trials already finished in an earlier, interrupted run (for resume).
        run_batch: runs several trials at once where the runner can (``--launcher ray``: one
            Ray task per trial), their results in the given order; ``None``: the runner has
            no batch path. Call :meth:`run_trials`, which falls back to ``run_trial``.
        device / dtype: where the inner problem runs.
        run_context: the cell's :class:`~optkit.context.RunContext` (registry, device, dtype,
            seed): build anything nested with ``run_context.create(...)`` and read plugin
            classes from ``run_context.plugins``, never from the process-wide registry.
    """

    objective_spec: dict[str, Any]
    optimizer_spec: dict[str, Any]
    budget: dict[str, Any]
    seed: int
    generator: torch.Generator
    run_trial: Callable[[Mapping[str, Any]], TrialResult]
    create_objective: Callable[[Mapping[str, Any]], Objective]
    create_optimizer: Callable[[Mapping[str, Any]], Optimizer]
    record: Callable[[dict[str, Any]], None]
    completed: list[TrialResult] = field(default_factory=list)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    run_context: RunContext = field(default_factory=RunContext)
    run_batch: Callable[[Sequence[Mapping[str, Any]]], list[TrialResult]] | None = None

    def run_trials(self, overrides: Sequence[Mapping[str, Any]]) -> list[TrialResult]:
        """Run one trial per overrides dict, possibly in parallel; results in the same order.

        A hyperoptimizer that can propose several configurations at once (a random-search
        plan, a q-batch of BoTorch) hands them over together, so a launcher that runs trials
        side by side (``ray``) can. The results are the same as those of ``run_trial`` called
        on each in order (each trial is deterministic given its overrides and seeds). Without
        ``run_batch`` this *is* that loop; a trial's failure is its result's ``error`` (and a
        ``nan`` score) either way, except that the loop lets an exception of ``run_trial``
        through, as ``run_trial`` does.
        """
        if self.run_batch is None:
            return [self.run_trial(o) for o in overrides]
        results = self.run_batch(list(overrides))
        if len(results) != len(overrides):
            raise RuntimeError(
                f"HyperContext.run_batch returned {len(results)} results for"
                f" {len(overrides)} trials (one per trial, in order, expected)"
            )
        return results


class HyperOptimizer(Plugin, abc.ABC):
    """Optimizes hyperparameters of an inner problem (objective + inner optimizer) against a
    validation score. Black-box members (random search, BoTorch) call ``context.run_trial``,
    or ``context.run_trials`` for several configurations proposed at once (so that a
    launcher can run them in parallel); gradient-based members (Flexora) build the inner
    objective and run their own loop."""

    kind: ClassVar[str] = "hyperoptimizer"

    @abc.abstractmethod
    def optimize(self, context: HyperContext) -> HyperResult:
        """Run the search; deterministic given ``context.seed``."""

    def supports(self, objective: Objective, optimizer: Optimizer) -> Support:
        return Support.yes()


# --------------------------------------------------------------------------------------------
# Launcher
# --------------------------------------------------------------------------------------------


@dataclass
class CellBatch:
    """The cells a :class:`Launcher` runs, and the runner's means to run and record them.

    Attributes:
        cells: the cells (``optkit.tasks.Cell``) to run, in order.
        run_here: runs one cell in this process, its rows streaming into the run directory;
            returns ``(ok, a one-line outcome)``. Errors are recorded as rows, not raised.
        payload: one cell -> plain, picklable data that ``run_payload`` accepts anywhere.
        run_payload: a module-level function ``payload -> rows`` that runs one whole cell in
            any process with optkit installed (``optkit.runner.run_cell_payload``).
        deliver: records the rows of a cell run elsewhere: appends them to the run directory,
            counts the cell, prints its progress line. Call it in this (the driver) process.
        progress: where progress lines go.
    """

    cells: list[Any]
    run_here: Callable[[Any], tuple[bool, str]]
    payload: Callable[[Any], dict[str, Any]]
    run_payload: Callable[[dict[str, Any]], list[dict[str, Any]]]
    deliver: Callable[[list[dict[str, Any]]], None]
    progress: Callable[[str], None]


class Launcher(Plugin, abc.ABC):
    """Where whole cells run: in this process (``local``), on a Ray cluster (``ray``), ...

    A launcher decides only *where*; the runner keeps the run directory, resume and the
    manifest. A remote launcher ships ``batch.payload(cell)`` with ``batch.run_payload`` and
    hands each cell's rows to ``batch.deliver`` as the cell finishes (in completion order),
    so an interrupted run loses only the cells still running.
    """

    kind: ClassVar[str] = "launcher"

    @abc.abstractmethod
    def launch(self, batch: CellBatch) -> None:
        """Run every cell of ``batch``; return when all rows are recorded."""

    def close(self) -> None:
        """Release what :meth:`launch` started (worker processes, ...): the runner calls this
        once when the run ends, finished, failed or interrupted. Default: nothing."""


KINDS: dict[str, type[Plugin]] = {
    "objective": Objective,
    "optimizer": Optimizer,
    "hyperoptimizer": HyperOptimizer,
    "executor": Executor,
    "launcher": Launcher,
}
