"""OptEx's options in one place: :class:`EstimatorConfig` and :class:`OptExConfig`.

Each option is a field of a frozen dataclass with its default, its documentation and its
check (in ``__post_init__``): an invalid value is a :class:`~optkit.errors.ConfigError` that
names the key and the valid values. The estimator, the :class:`~optkit_optex.engine.Engine`
and both front ends (the registered ``optex`` optimizer and the ``torch.optim`` drop-in
``optkit.OptEx``) take these objects whole; the registered optimizer's flat task-file keys are
the fields themselves (:func:`with_option_keywords`).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from optkit.errors import ConfigError
from optkit_optex.kernels import KERNELS

FitMode = Literal["heuristic", "mll", "fixed", "forward", "reference", "mean"]
FIT_MODES: tuple[str, ...] = typing.get_args(FitMode)
"""Valid values of the ``fit`` option (see :class:`EstimatorConfig`)."""
NoiseEstimate = Literal["fit", "spread"]
NextIterate = Literal["last", "best"]
Auto = Literal["auto"]

DEFAULT_PARALLELISM = 5
"""``parallelism`` when neither it nor ``workers`` is given."""

OWNER = "optimizer 'optex'"
"""Who names itself in a bad option's message unless a front end says otherwise."""


class OptionError(ConfigError):
    """A bad option value; :attr:`detail` is the message without its owner, so that a front
    end can name itself (:meth:`OptExConfig.create`)."""

    def __init__(self, detail: str, owner: str = OWNER) -> None:
        super().__init__(f"{owner}: {detail}")
        self.detail = detail


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _choice(key: str, value: object, valid: tuple[str, ...]) -> None:
    if value not in valid:
        names = [repr(v) for v in valid]
        which = f"{names[0]} or {names[1]}" if len(names) == 2 else f"one of {', '.join(names)}"
        raise OptionError(f"{key} must be {which}, got {value!r}")


def _at_least(key: str, value: object, low: int, what: str = "") -> None:
    if not _is_int(value) or value < low:  # type: ignore[operator]
        raise OptionError(f"{key} must be an integer >= {low}{what}, got {value!r}")


@dataclass(frozen=True)
class EstimatorConfig:
    """The options of :class:`~optkit_optex.estimator.KernelGradientEstimator`.

    Attributes:
        history: T0 >= 2, the number of (point, gradient) pairs kept.
        kernel: a name from :data:`optkit_optex.kernels.KERNELS`.
        fit: ``"heuristic"`` (median distance + leave-one-out noise), ``"forward"`` (the
            same candidates chosen by forward validation: predict the newest round's
            gradients from the older pairs), ``"mll"`` (GPyTorch marginal likelihood,
            started from the heuristic), ``"fixed"`` or ``"reference"`` (the released
            settings: lengthscale 0.1 on inputs divided by the mean norm of the stored
            points, relative noise 1e-3, nothing fitted) or ``"mean"`` (the ablation
            without a kernel: every proxy step is fed the plain mean of the stored
            gradients, the GP mean as the lengthscale goes to infinity; nothing fitted).
        lengthscale: hold the lengthscale at this value > 0 (required by ``fit="fixed"``).
        noise: hold the relative noise ``s^2 / outputscale`` >= 0 at this value (``"fixed"``
            defaults it to 1e-3, the released reference's value).
        fit_coords: m >= 1, the number of gradient coordinates the fit looks at.
        refit_every: refit the hyperparameters every this many iterations (``W`` is rebuilt
            every iteration regardless).
        fit_lag: iterations between a fit's data and its use. 0: ``begin`` fits on the
            current history and waits for it (the fit is on the critical path). L >= 1: the
            fit on the history at iteration t runs in a background worker thread (on CUDA)
            while iteration t goes on, and iteration t + L uses its hyperparameters (until
            then the previous ones; the first fit is waited for); ``W`` is always the solve on
            the *current* history (:mod:`optkit_optex.fit_schedule`). Default 2: on the
            H200's host the fit takes 2-3 ms, about one iteration, so with L = 1 ``begin``
            often waited for it (``docs/optex.md``); the iteration counts on the CPU
            benchmarks did not change (``docs/benchmarks/optex-synthetic.md``).
        mll_steps: Adam steps of the marginal-likelihood fit.
        seed: seed of the coordinate subsamples (the fit's and ``effective_dim``'s).
        effective_dim: measure distances on this many seeded random coordinates instead of
            all ``d`` (as the released code offers); ``None``: all. At most the parameter
            count (:meth:`check_dim`, once the parameters are known).
        noise_estimate: ``"fit"`` (the fitting rule chooses the relative noise) or
            ``"spread"`` (measured from each round's gradients; the fit chooses only the
            lengthscale).
    """

    history: int = 50
    kernel: str = "matern52"
    fit: FitMode = "heuristic"
    lengthscale: float | None = None
    noise: float | None = None
    fit_coords: int = 128
    refit_every: int = 1
    fit_lag: int = 2
    mll_steps: int = 30
    seed: int = 0
    effective_dim: int | None = None
    noise_estimate: NoiseEstimate = "fit"

    def __post_init__(self) -> None:
        if not _is_int(self.history) or self.history < 2:
            raise OptionError(f"history (T0) must be >= 2 (an integer), got {self.history!r}")
        if self.kernel not in KERNELS:
            raise OptionError(
                f"unknown kernel {self.kernel!r}; valid kernels: {', '.join(KERNELS)}"
            )
        _choice("fit", self.fit, FIT_MODES)
        if self.effective_dim is not None:
            _at_least("effective_dim", self.effective_dim, 1, " (at most the parameter count)")
        _choice("noise_estimate", self.noise_estimate, typing.get_args(NoiseEstimate))
        if self.fit == "mean" and (self.lengthscale is not None or self.noise is not None):
            raise OptionError(
                "fit = 'mean' uses no kernel (the estimate is the mean of the stored"
                " gradients); leave lengthscale and noise out"
            )
        fixed_noise = self.noise is not None or self.fit in ("fixed", "reference", "mean")
        if self.noise_estimate == "spread" and fixed_noise:
            raise OptionError(
                "noise_estimate = 'spread' sets the noise itself; it cannot be combined with a"
                f" fixed noise or fit = {self.fit!r} (use fit = 'heuristic', 'forward' or 'mll'"
                " without noise)"
            )
        if self.fit == "reference" and (self.lengthscale is not None or self.noise is not None):
            raise OptionError(
                "fit = 'reference' uses the released lengthscale and noise; leave lengthscale"
                " and noise out (or use fit = 'fixed')"
            )
        if self.fit == "mll" and importlib.util.find_spec("gpytorch") is None:
            raise OptionError("fit = 'mll' needs gpytorch: pip install 'optkit[optex]'")
        if self.fit == "fixed" and self.lengthscale is None:
            raise OptionError("fit = 'fixed' needs a lengthscale")
        if self.lengthscale is not None and not (
            _is_number(self.lengthscale) and self.lengthscale > 0
        ):
            raise OptionError(f"lengthscale must be a number > 0, got {self.lengthscale!r}")
        if self.noise is not None and not (_is_number(self.noise) and self.noise >= 0):
            raise OptionError(f"noise must be a number >= 0, got {self.noise!r}")
        _at_least("fit_coords", self.fit_coords, 1)
        _at_least("refit_every", self.refit_every, 1)
        _at_least("fit_lag", self.fit_lag, 0)
        _at_least("mll_steps", self.mll_steps, 1)
        if not _is_int(self.seed):
            raise OptionError(f"seed must be an integer, got {self.seed!r}")

    def check_dim(self, dim: int, owner: str = OWNER) -> None:
        """:class:`ConfigError` when ``effective_dim`` exceeds ``dim``, the parameter count."""
        if self.effective_dim is not None and self.effective_dim > dim:
            raise ConfigError(
                f"{owner}: effective_dim = {self.effective_dim} is larger than the number of"
                f" parameters ({dim}); use an integer from 1 to {dim}, or leave it out for all"
                " coordinates"
            )


@dataclass(frozen=True)
class OptExConfig:
    """One OptEx iteration's options, and the estimator's (:class:`EstimatorConfig`).

    A round evaluates ``W = P x K`` stochastic gradients: ``K`` minibatch gradients at each
    of ``P`` points along the proxy trajectory. Give the split as ``parallelism`` (and
    ``batches_per_point``), or give ``workers = W`` and one of the two (the other is
    ``W / it``), or ``workers`` with ``batches_per_point = "auto"``. After construction
    ``parallelism`` and ``batches_per_point`` hold the resolved split (except ``"auto"``,
    which stays; :attr:`split` is the split a round uses until the measurement).

    Attributes:
        parallelism: P >= 1 points per parallel round (P = 1 is the base optimizer, or
            data parallelism over K workers). Default 5 without ``workers``; with
            ``workers`` it is ``workers / batches_per_point``.
        next_iterate: ``"best"`` (the true step from the point with the lowest observed
            loss, the default since 2026-12-07: fewer or equal steps to target on all five
            (workload, batch) pairs of ``docs/benchmarks/optex-networks.md``, unchanged on the
            synthetic functions) or ``"last"`` (from the last proxy point, the released rule).
        proxy_updates_state: carry the base state (Adam moments, step count) through the
            proxy steps (released behaviour); ``False`` runs them on a copy and takes the true
            step from the iteration's starting state.
        batches_per_point: K >= 1 minibatch gradients averaged at each point (their spread
            is the noise measurement of ``noise_estimate = "spread"`` when K >= 2); default
            1, or ``workers / parallelism``. ``"auto"`` (needs ``workers``, not
            ``parallelism``): the first :data:`~optkit_optex.auto_split.AUTO_ROUNDS` rounds
            are data-parallel rounds of all W workers at one point, which measure the
            gradient noise scale ``B_simple`` (McCandlish et al. 2018) in units of one
            worker's minibatch, ``B = B_simple / batch``; from then on K is the divisor of W
            nearest to B on a log scale (so ``K x batch ~ B_simple``, clamped to [1, W]) and
            P = W / K (:mod:`optkit_optex.auto_split`).
        workers: W >= 1 gradients per round, split as ``parallelism x batches_per_point``
            (``None``: ``parallelism x batches_per_point``).
        stop_variance: stop the proxy trajectory at the first point whose relative posterior
            variance ``1 - k W k`` exceeds this value in (0, 1] (``None``: never); the workers
            of the points not reached evaluate the last point.
        adaptive_points: let the trajectory's length follow the observed losses (needs
            ``next_iterate = "best"``, not ``"auto"``): a round that chose point ``j`` (0 is
            the iterate itself) gives the next round ``min(P, max(2, j + 2))`` points, one
            past the chosen one, and the round's W workers are shared out evenly among them
            (the remainder to the last). A trajectory whose later points do not help shrinks
            towards two points with W / 2 minibatches each, near data parallelism; one whose
            last point keeps winning grows back to P.
        estimator: the estimator's options.
    """

    parallelism: int | None = None
    next_iterate: NextIterate = "best"
    proxy_updates_state: bool = True
    batches_per_point: int | Auto | None = None
    stop_variance: float | None = None
    workers: int | None = None
    adaptive_points: bool = False
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)

    def __post_init__(self) -> None:
        if self.parallelism is not None and (not _is_int(self.parallelism) or self.parallelism < 1):
            raise OptionError(f"parallelism must be >= 1, got {self.parallelism!r}")
        _choice("next_iterate", self.next_iterate, typing.get_args(NextIterate))
        if not isinstance(self.proxy_updates_state, bool):
            raise OptionError(
                f"proxy_updates_state must be true or false, got {self.proxy_updates_state!r}"
            )
        if self.batches_per_point not in (None, "auto"):
            _at_least(
                "batches_per_point",
                self.batches_per_point,
                1,
                " or 'auto' (the minibatch gradients averaged at each point; workers ="
                " parallelism x batches_per_point)",
            )
        if self.workers is not None:
            _at_least(
                "workers",
                self.workers,
                1,
                " (the gradients of one round, split as parallelism x batches_per_point)",
            )
        stop = self.stop_variance
        if stop is not None and not (_is_number(stop) and 0.0 < float(stop) <= 1.0):
            raise OptionError(
                "stop_variance must be a number in (0, 1] (the relative posterior variance"
                f" above which the proxy trajectory stops) or left out, got {stop!r}"
            )
        if not isinstance(self.estimator, EstimatorConfig):
            raise OptionError(f"estimator must be an EstimatorConfig, got {self.estimator!r}")
        if stop is not None and self.estimator.fit == "mean":
            raise OptionError(
                "stop_variance needs the kernel's posterior variance, and fit = 'mean' has no"
                " kernel; leave stop_variance out or choose another fit"
            )
        if not isinstance(self.adaptive_points, bool):
            raise OptionError(
                f"adaptive_points must be true or false, got {self.adaptive_points!r}"
            )
        if self.adaptive_points and self.next_iterate != "best":
            raise OptionError(
                "adaptive_points follows the point with the lowest observed loss, so it needs"
                f" next_iterate = 'best' (got next_iterate = {self.next_iterate!r})"
            )
        if self.adaptive_points and self.batches_per_point == "auto":
            raise OptionError(
                "adaptive_points and batches_per_point = 'auto' both choose the split; give"
                " one of them"
            )
        parallelism, per_point = self._resolve_split()
        object.__setattr__(self, "parallelism", parallelism)
        object.__setattr__(self, "batches_per_point", per_point)

    def _resolve_split(self) -> tuple[int | None, int | Auto]:
        """(parallelism, batches_per_point) from the three split keys (see the class
        docstring); a missing or inconsistent split is an :class:`OptionError` naming the
        keys."""
        p, k, w = self.parallelism, self.batches_per_point, self.workers
        if k == "auto":
            if w is None:
                raise OptionError(
                    "batches_per_point = 'auto' needs workers = W, the gradients of one round:"
                    " K is then chosen from the measured gradient noise scale and parallelism"
                    " = W / K (e.g. workers = 8, batches_per_point = 'auto')"
                )
            if p is not None:
                raise OptionError(
                    f"batches_per_point = 'auto' chooses parallelism = workers / K itself;"
                    f" leave parallelism out (got parallelism = {p}, workers = {w})"
                )
            return None, "auto"
        if w is None:
            return (DEFAULT_PARALLELISM if p is None else p), (1 if k is None else k)
        if p is None:
            k = 1 if k is None else k
            if w % k:
                raise OptionError(
                    f"workers = {w} is not divisible by batches_per_point = {k}: parallelism ="
                    f" workers / batches_per_point must be an integer (valid batches_per_point"
                    f" for {w} workers: {', '.join(map(str, divisors(w)))})"
                )
            return w // k, k
        if k is None:
            if w % p:
                raise OptionError(
                    f"workers = {w} is not divisible by parallelism = {p}: batches_per_point ="
                    f" workers / parallelism must be an integer (valid parallelism for {w}"
                    f" workers: {', '.join(map(str, divisors(w)))})"
                )
            return p, w // p
        if p * k != w:
            raise OptionError(
                f"parallelism x batches_per_point = {p} x {k} = {p * k} but workers = {w}:"
                " give workers with one of parallelism / batches_per_point (the other is"
                " workers / it), or all three consistently"
            )
        return p, k

    @property
    def auto(self) -> bool:
        """``batches_per_point = "auto"``: the split is chosen from the measured noise."""
        return self.batches_per_point == "auto"

    @property
    def split(self) -> tuple[int, int]:
        """(P, K) of a round: the configured split, or with ``"auto"`` the measuring split
        (1, W) of the first rounds (the engine re-splits after the measurement)."""
        if self.batches_per_point == "auto" or self.parallelism is None:
            assert self.workers is not None
            return 1, self.workers
        assert isinstance(self.batches_per_point, int)
        return self.parallelism, self.batches_per_point

    @property
    def round_size(self) -> int:
        """W, the gradients every round evaluates (constant over a run, also with "auto")."""
        p, k = self.split
        return p * k

    @property
    def saves_states(self) -> bool:
        """Whether the base state at each proxy point must be kept: the true step may start
        from a point before the last (``"best"`` or ``stop_variance``) with a state carried
        through the proxy steps."""
        return (
            self.next_iterate == "best" or self.stop_variance is not None
        ) and self.proxy_updates_state

    @classmethod
    def create(cls, owner: str = OWNER, **options: Any) -> OptExConfig:
        """The config of flat keyword ``options`` (any field of this class or of
        :class:`EstimatorConfig`), errors naming ``owner`` (e.g. ``"optkit.OptEx"``).

        Raises:
            ConfigError: an unknown key (with close names and the valid keys) or a bad value.
        """
        iteration, estimator = split_options(options, owner)
        try:
            return cls(**iteration, estimator=EstimatorConfig(**estimator))
        except OptionError as err:
            raise OptionError(err.detail, owner) from None

    def options(self) -> dict[str, Any]:
        """The flat keyword options (inverse of :meth:`create`)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        del out["estimator"]
        return {**out, **dataclasses.asdict(self.estimator)}


ITERATION_KEYS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(OptExConfig) if f.name != "estimator"
)
ESTIMATOR_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(EstimatorConfig))
OPTION_KEYS: tuple[str, ...] = ITERATION_KEYS + ESTIMATOR_KEYS
"""Every flat OptEx option key (of :meth:`OptExConfig.create`)."""


def divisors(n: int) -> list[int]:
    """The divisors of ``n`` >= 1, increasing: the valid ``batches_per_point`` (and
    ``parallelism``) for ``workers = n``."""
    return [k for k in range(1, n + 1) if n % k == 0]


def split_options(
    options: Mapping[str, Any], owner: str = OWNER
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``options`` as (iteration options, estimator options); an unknown key is a
    :class:`ConfigError` with close names and the valid keys."""
    for key in options:
        if key not in OPTION_KEYS:
            close = difflib.get_close_matches(key, OPTION_KEYS, n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(
                f"{owner}: unknown option {key!r}.{hint} Valid: {', '.join(OPTION_KEYS)}"
            )
    iteration = {k: v for k, v in options.items() if k in ITERATION_KEYS}
    estimator = {k: v for k, v in options.items() if k in ESTIMATOR_KEYS}
    return iteration, estimator


F = TypeVar("F", bound=Callable[..., Any])


def with_option_keywords(func: F) -> F:
    """Give ``func`` (an ``__init__`` taking ``**options``) a signature that lists every
    OptEx option (:data:`OPTION_KEYS`) as a keyword-only parameter with its default and type,
    in place of ``**options``: the registry then validates a task file's keys and types
    against it (:func:`optkit.config.validate_config`), as for any plugin. The defaults are
    :class:`OptExConfig`'s and :class:`EstimatorConfig`'s: written once, there."""
    sig = inspect.signature(func)
    hints = {**typing.get_type_hints(EstimatorConfig), **typing.get_type_hints(OptExConfig)}
    defaults = {**dataclasses.asdict(EstimatorConfig()), **OptExConfig().options()}
    params = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
    added = [
        inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=defaults[key])
        for key in OPTION_KEYS
    ]
    func.__signature__ = sig.replace(parameters=[*params, *added])  # type: ignore[attr-defined]
    func.__annotations__ = {
        **{k: v for k, v in func.__annotations__.items() if k != "options"},
        **{key: hints[key] for key in OPTION_KEYS},
    }
    return func
