"""The ``[tuning]`` and ``[target]`` sections of a task file: parse, validate, resolve keys.

::

    [tuning]          # tune every optimizer of the task the same way, before the measured runs
    hyperoptimizer = { name = "random_search", trials = 12 }  # any registered black-box one
    space = { lr = { low = 1e-4, high = 0.3, log = true } }   # `lr`: each optimizer's own
    score = "val_loss"      # a metric the objective declares; its direction decides min/max
    seeds = [1000]          # disjoint from the measured seeds
    budget = { iterations = 200 }   # optional: the task's budget by default

    [target]          # the value every method must reach
    reference = "adam"      # a label of the task: its tuned runs set the target, seed by seed
    metric = "train_loss"   # or `value = 0.05` instead of `reference`

Space keys are *plain* (``lr``: mapped per optimizer through its ``hyper_aliases``, so ``lr``
is ``lr`` for a plain rule and ``base_config.lr`` for a wrapper) or *dotted* with a prefix
(``optimizer.parallelism``, ``objective.batch_size``), used as written. Each optimizer's
resolved space (dotted ``optimizer.<its key>``) is what the registered hyperoptimizer gets as
its ``space``, so spaces and searches are the hyperoptimizer plugin's own.

:func:`parse_tuning` / :func:`parse_target` run when a task is loaded (key names, types,
seeds disjoint, reference a label); :func:`check_comparison` runs in ``optkit check`` with the
live registry (metrics declared by each objective, space keys each optimizer has, the
hyperoptimizer's own config).

In a task with hyperoptimizer cells (``hyperoptimizer(s)`` as a matrix dimension) the method
labels are ``<hyperoptimizer label>:<optimizer label>``, a tuning trial is one whole
hyperoptimizer cell, and ``score`` / ``target.metric`` must be values its ``end`` row reports
(:func:`check_hyper_comparison`; ``best_score`` always).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from optkit.errors import ConfigError, PluginError

if TYPE_CHECKING:
    from optkit.interfaces import Objective
    from optkit.registry import Registry
    from optkit.tasks import Budget, ComponentSpec, Task

TUNING_KEYS = {
    "hyperoptimizer": "table with 'name' and its config (e.g. trials); not 'space'",
    "space": "table: plain keys (lr) or dotted keys (optimizer.parallelism) -> parameter table",
    "score": "metric the objective declares (metric_direction); minimised or maximised by it",
    "seeds": "list of integer seeds, disjoint from the task's seeds",
    "budget": "optional table: iterations, time_s (default: the task's)",
}
TUNING_BUDGET_KEYS = ("iterations", "time_s")
TARGET_KEYS = {
    "reference": "a label of the task's optimizers: its tuned runs set the target per seed",
    "metric": "metric the objective declares (metric_direction)",
    "value": "a fixed target value (instead of 'reference')",
}
PREFIXES = ("optimizer.", "objective.")


@dataclass(frozen=True)
class TuningSpec:
    """A validated ``[tuning]`` section.

    Attributes:
        hyperoptimizer: the hyperoptimizer's component (``space`` is added per optimizer).
        space: the parameter tables by the keys as written (plain or dotted).
        score: the metric a trial is scored on (its final value, mean over ``seeds``).
        seeds: the tuning seeds (disjoint from the measured seeds); the search's own seed
            (random search's plan) is ``seeds[0]``, the same for every optimizer.
        budget: each trial's budget per seed (``eval_every = iterations``: scored at the end).
    """

    hyperoptimizer: ComponentSpec
    space: dict[str, Any]
    score: str
    seeds: list[int]
    budget: Budget


@dataclass(frozen=True)
class TargetSpec:
    """A validated ``[target]`` section: ``metric`` and either ``reference`` or ``value``."""

    metric: str
    reference: str | None = None
    value: float | None = None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _unknown(section: str, key: str, valid: Mapping[str, str], source: str) -> ConfigError:
    keys = "; ".join(f"{k}: {v}" for k, v in valid.items())
    return ConfigError(f"{source}: unknown key '{section}.{key}'. Valid keys: {keys}.")


def parse_tuning(raw: Any, task_seeds: Sequence[int], budget: Budget, source: str) -> TuningSpec:
    """Validate a ``[tuning]`` table (everything that needs no registry).

    Raises:
        ConfigError: naming the key: unknown keys, a missing or malformed hyperoptimizer,
            space, score or seeds, tuning seeds that overlap ``task_seeds``, a bad budget.
    """
    from optkit.tasks import _component

    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: 'tuning' must be a table ([tuning]), got {raw!r}")
    for key in raw:
        if key not in TUNING_KEYS:
            raise _unknown("tuning", key, TUNING_KEYS, source)
    for key in ("hyperoptimizer", "space", "score", "seeds"):
        if key not in raw:
            raise ConfigError(f"{source}: key 'tuning.{key}' is required ({TUNING_KEYS[key]})")
    hyper = _component(raw["hyperoptimizer"], "hyperoptimizer", f"{source}: tuning.hyperoptimizer")
    if "space" in hyper.config:
        raise ConfigError(
            f"{source}: 'tuning.hyperoptimizer' must not hold a 'space': give it as"
            " 'tuning.space' (plain keys such as lr map to each optimizer's own key)"
        )
    space = raw["space"]
    if not isinstance(space, dict) or not space:
        raise ConfigError(
            f"{source}: 'tuning.space' must be a non-empty table such as"
            " { lr = { low = 1e-4, high = 0.3, log = true } }"
        )
    for key, param in space.items():
        if not isinstance(param, dict):
            raise ConfigError(
                f"{source}: 'tuning.space.{key}' must be a parameter table such as"
                f" {{ low = 1e-4, high = 0.3, log = true }} or {{ choices = [1, 2] }}, got"
                f" {param!r}"
            )
        if any(part == "" for part in key.split(".")):
            raise ConfigError(
                f"{source}: 'tuning.space' key '{key}' has an empty part; use a plain key (lr)"
                " or a dotted one (optimizer.parallelism, optimizer.base_config.lr)"
            )
    score = raw["score"]
    if not isinstance(score, str) or not score:
        raise ConfigError(f"{source}: 'tuning.score' must be a metric name, got {score!r}")
    seeds = raw["seeds"]
    if not isinstance(seeds, list) or not seeds or not all(_is_int(s) and s >= 0 for s in seeds):
        raise ConfigError(
            f"{source}: 'tuning.seeds' must be a non-empty list of integers >= 0, got {seeds!r}"
        )
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{source}: 'tuning.seeds' has duplicates: {seeds!r}")
    overlap = sorted(set(seeds) & set(task_seeds))
    if overlap:
        raise ConfigError(
            f"{source}: 'tuning.seeds' {seeds} overlap the measured 'seeds' {list(task_seeds)}"
            f" at {overlap}: a configuration must not be chosen on the seeds it is measured on;"
            " use other seeds, e.g. [1000]"
        )
    return TuningSpec(hyper, dict(space), score, list(seeds), _tuning_budget(raw, budget, source))


def _tuning_budget(raw: dict[str, Any], budget: Budget, source: str) -> Budget:
    from optkit.tasks import Budget

    value = raw.get("budget", {})
    if not isinstance(value, dict):
        raise ConfigError(
            f"{source}: 'tuning.budget' must be a table such as {{ iterations = 200 }}"
        )
    for key in value:
        if key not in TUNING_BUDGET_KEYS:
            raise ConfigError(
                f"{source}: unknown key 'tuning.budget.{key}'; valid: iterations (integer > 0),"
                " time_s (seconds > 0). A trial is scored on its final evaluation."
            )
    iterations = value.get("iterations", budget.iterations)
    if not _is_int(iterations) or iterations <= 0:
        raise ConfigError(
            f"{source}: 'tuning.budget.iterations' must be an integer > 0, got {iterations!r}"
        )
    time_s = value.get("time_s", budget.time_s)
    if time_s is not None and (
        not isinstance(time_s, (int, float)) or isinstance(time_s, bool) or time_s <= 0
    ):
        raise ConfigError(f"{source}: 'tuning.budget.time_s' must be a number > 0, got {time_s!r}")
    return Budget(iterations, iterations, time_s, None)


def parse_target(raw: Any, labels: Sequence[str], source: str) -> TargetSpec:
    """Validate a ``[target]`` table against the task's optimizer ``labels``.

    Raises:
        ConfigError: unknown keys, no ``metric``, both or neither of ``reference`` and
            ``value``, a reference that is not a label of the task, a value that is no number.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: 'target' must be a table ([target]), got {raw!r}")
    for key in raw:
        if key not in TARGET_KEYS:
            raise _unknown("target", key, TARGET_KEYS, source)
    metric = raw.get("metric")
    if not isinstance(metric, str) or not metric:
        raise ConfigError(
            f"{source}: 'target.metric' is required: the metric every method must reach"
            f' (e.g. "train_loss"), got {metric!r}'
        )
    if ("reference" in raw) == ("value" in raw):
        raise ConfigError(
            f"{source}: [target] takes exactly one of 'target.reference' (a label whose tuned"
            " runs set the target) and 'target.value' (a number), "
            + ("not both" if "value" in raw else "got neither")
        )
    if "value" in raw:
        value = raw["value"]
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{source}: 'target.value' must be a number, got {value!r}")
        return TargetSpec(metric, None, float(value))
    reference = raw["reference"]
    # a hyperoptimizer cell's label is '<hyperoptimizer label>:<optimizer label>': its
    # hyperoptimizer part is checked against the task's by check_comparison
    optimizer_part = reference.rpartition(":")[2] if isinstance(reference, str) else reference
    if optimizer_part not in labels:
        raise ConfigError(
            f"{source}: 'target.reference' {reference!r} is not a label of this task's"
            f" optimizers; labels: {', '.join(labels)} (in a task with hyperoptimizers:"
            " '<hyperoptimizer label>:<optimizer label>')"
        )
    return TargetSpec(metric, str(reference), None)


def resolve_key(key: str, optimizer_cls: type) -> str:
    """The dotted ``optimizer.`` / ``objective.`` key a space key means for ``optimizer_cls``.

    ``objective.x`` and ``optimizer.x`` stay as written; a plain key's first segment is mapped
    through the optimizer's ``hyper_aliases`` (``lr`` -> ``base_config.lr`` for wrappers),
    else used as is: ``lr`` -> ``optimizer.lr``, ``betas.0`` -> ``optimizer.betas.0``.
    """
    if key.startswith(PREFIXES):
        return key
    head, dot, rest = key.partition(".")
    aliases: Mapping[str, str] = getattr(optimizer_cls, "hyper_aliases", {})
    return f"optimizer.{aliases.get(head, head)}{dot}{rest}"


def resolved_space(tuning: TuningSpec, optimizer_cls: type) -> dict[str, Any]:
    """The space as the hyperoptimizer plugin takes it for one optimizer (dotted keys)."""
    return {resolve_key(k, optimizer_cls): copy.deepcopy(v) for k, v in tuning.space.items()}


def plain_config(
    tuning: TuningSpec, optimizer_cls: type, overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """``{"optimizer.base_config.lr": v}`` back to the keys as written (``{"lr": v}``)."""
    back = {resolve_key(k, optimizer_cls): k for k in tuning.space}
    return {back.get(k, k): v for k, v in overrides.items()}


def _sample_value(param: Mapping[str, Any]) -> Any:
    """A value inside a parameter table (its low end or first choice), to test-build with;
    ``None`` for tables this check cannot sample (layer selections): the plugin checks those."""
    if isinstance(param.get("choices"), list) and param["choices"]:
        return param["choices"][0]
    if "low" in param:
        low = param["low"]
        return int(low) if param.get("type") == "int" else low
    return None


def _declared(objective: Objective) -> dict[str, str]:
    return dict(objective.metric_direction())


def check_metric(metric: str, key: str, objectives: Mapping[str, Objective], source: str) -> None:
    """``metric`` must be declared by every objective (keys of its ``metric_direction()``)."""
    for label, objective in objectives.items():
        declared = _declared(objective)
        if metric not in declared:
            raise ConfigError(
                f"{source}: '{key}' = {metric!r} is not a metric objective '{label}'"
                f" ({objective.name}) declares; it declares: {', '.join(sorted(declared))}"
            )


def check_comparison(task: Task, objectives: Mapping[str, Objective], registry: Registry) -> None:
    """Check ``[tuning]`` / ``[target]`` against the live plugins (``optkit check``).

    Raises:
        ConfigError / PluginError: a metric an objective does not declare (in a task with
            hyperoptimizer cells: a metric a hyperoptimizer's cell does not report), a space
            key an optimizer lacks (or whose value its config rejects), a hyperoptimizer that
            takes no ``space`` or rejects its config, a reference that is no cell label.
    """
    from optkit.config import accepts_any_keyword, config_schema
    from optkit.runner import apply_dotted

    source = task.source
    if task.hyperoptimizers:
        check_hyper_comparison(task, registry)
    elif task.target is not None:
        check_metric(task.target.metric, "target.metric", objectives, source)
        if task.target.reference is not None and ":" in task.target.reference:
            labels = ", ".join(o.label for o in task.optimizers)
            raise ConfigError(
                f"{source}: 'target.reference' {task.target.reference!r} names a"
                f" hyperoptimizer cell, but this task has no hyperoptimizers; labels: {labels}"
            )
    tuning = task.tuning
    if tuning is None:
        return
    if not task.hyperoptimizers:
        check_metric(tuning.score, "tuning.score", objectives, source)
    try:
        hyper_cls = registry.get("hyperoptimizer", tuning.hyperoptimizer.name)
    except PluginError as exc:
        raise PluginError(f"{source}: tuning.hyperoptimizer: {exc}") from None
    if not accepts_any_keyword(hyper_cls) and "space" not in config_schema(hyper_cls):
        raise ConfigError(
            f"{source}: tuning.hyperoptimizer '{tuning.hyperoptimizer.name}' takes no 'space':"
            " [tuning] needs a black-box hyperoptimizer such as random_search or botorch"
        )
    for objective_spec in task.objectives:
        objective_cls = registry.get("objective", objective_spec.name)
        if accepts_any_keyword(objective_cls):
            continue
        fields = config_schema(objective_cls)
        for key in tuning.space:
            head, _, rest = key.partition(".")
            if head == "objective" and rest.split(".")[0] not in fields:
                raise ConfigError(
                    f"{source}: tuning.space key '{key}': objective '{objective_spec.label}'"
                    f" ({objective_spec.name}) has no config key '{rest.split('.')[0]}';"
                    f" valid: {', '.join(sorted(fields))}"
                )
    for spec in task.optimizers:
        cls = registry.get("optimizer", spec.name)
        space = resolved_space(tuning, cls)
        where = (
            f"{source}: [tuning] (hyperoptimizer and space as given for optimizer '{spec.label}')"
        )
        try:
            registry.create(
                "hyperoptimizer", {**tuning.hyperoptimizer.spec(), "space": space}, where
            )
        except ConfigError as exc:
            raise ConfigError(
                str(exc) if str(exc).startswith(where) else f"{where}: {exc}"
            ) from None
        schema = None if accepts_any_keyword(cls) else config_schema(cls)
        for key, resolved in zip(tuning.space, space, strict=True):
            head, _, rest = resolved.partition(".")
            first = rest.split(".")[0]
            if head == "optimizer" and schema is not None and first not in schema:
                aliases = getattr(cls, "hyper_aliases", {})
                known = sorted({*schema, *aliases} - {"base", "base_config"})
                raise ConfigError(
                    f"{source}: tuning.space key '{key}': optimizer '{spec.label}'"
                    f" ({spec.name}) has no hyperparameter '{first}'; its keys and aliases:"
                    f" {', '.join(known)}. Remove the optimizer from the task or the key"
                    " from the space"
                )
            value = _sample_value(tuning.space[key])
            if head != "optimizer" or value is None:
                continue
            trial = apply_dotted(spec.spec(), "optimizer", {resolved: value})
            try:
                registry.create("optimizer", trial, f"optimizer '{spec.label}'")
            except ConfigError as exc:
                raise ConfigError(
                    f"{source}: tuning.space key '{key}' (as '{rest}' for optimizer"
                    f" '{spec.label}') does not fit that optimizer: {exc}"
                ) from None


def hyper_labels(task: Task) -> list[str]:
    """The method labels of a task with hyperoptimizer cells: ``hyperoptimizer:optimizer``."""
    return [f"{h.label}:{o.label}" for h in task.hyperoptimizers for o in task.optimizers]


def check_hyper_comparison(task: Task, registry: Registry) -> None:
    """``[tuning].score`` and ``[target]`` of a task whose cells are hyperoptimizer cells.

    A tuning trial there is a whole hyperoptimizer cell, scored on a value its ``end`` row
    reports (:func:`optkit.runner.hyper_cell.reported_metrics`: ``best_score`` and what the
    hyperoptimizer declares), and ``[target]`` compares those final values.

    Raises:
        ConfigError: a score or target metric that some hyperoptimizer of the task does not
            report (naming the hyperoptimizer and what it reports), or a ``target.reference``
            that is not one of the task's ``hyperoptimizer:optimizer`` labels.
    """
    from optkit.checking import missing_requirements
    from optkit.runner.hyper_cell import reported_metrics

    source = task.source
    wanted: list[tuple[str, str]] = []
    if task.tuning is not None:
        wanted.append(("tuning.score", task.tuning.score))
    if task.target is not None:
        wanted.append(("target.metric", task.target.metric))
    for spec in task.hyperoptimizers:
        if missing_requirements(registry, spec) is not None:
            continue  # its cells are skipped with the reason (optkit.checking.check_task)
        reports = reported_metrics(registry.create("hyperoptimizer", spec.spec(), spec.where))
        for key, metric in wanted:
            if metric not in reports:
                raise ConfigError(
                    f"{source}: '{key}' = {metric!r} is not a value that the cells of"
                    f" hyperoptimizer '{spec.label}' ({spec.name}) report: in a task with"
                    " hyperoptimizer cells, a tuning trial is a whole hyperoptimizer cell and is"
                    f" scored on its end row. Valid: {', '.join(sorted(reports))} (best_score:"
                    " the hyperoptimizer's own score; the others are what it declares with"
                    " reported_metrics())"
                )
    reference = task.target.reference if task.target is not None else None
    labels = hyper_labels(task)
    if reference is not None and reference not in labels:
        raise ConfigError(
            f"{source}: 'target.reference' {reference!r} is not a method label of this task:"
            " a task with hyperoptimizers labels its methods '<hyperoptimizer label>:"
            f"<optimizer label>'; valid: {', '.join(labels)}"
        )


__all__ = [
    "TargetSpec",
    "TuningSpec",
    "check_comparison",
    "check_hyper_comparison",
    "hyper_labels",
    "parse_target",
    "parse_tuning",
    "plain_config",
    "resolve_key",
    "resolved_space",
]
