"""Check a parsed task against the plugins, before anything runs: every component built and
validated, optimizers probed, the score checked, pairings and missing packages turned into
skip reasons. This is the half of task handling that loads plugins (:mod:`optkit.tasks`
parses without them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from optkit.errors import ConfigError
from optkit.registry import Registry
from optkit.tasks import Cell, ComponentSpec, Task, _fail


def probe_optimizer(optimizer: Any, spec: ComponentSpec) -> None:
    """Let an optimizer, and the library under it, judge its config before anything runs.

    ``init`` on a tiny problem (``{"x": zeros(2)}``) builds what a run builds first: a
    ``torch.optim`` instance raises ``ValueError`` for ``lr < 0`` only then. A ``ValueError``
    is the config's fault; an optimizer that cannot start on the probe for another reason
    (it needs named parameters, say) is left to the run.

    Raises:
        ConfigError: naming the task file, the optimizer and the library's reason.
        EnvironmentProblem: the optimizer needs a package that is not installed.
    """
    import torch

    from optkit.envproblems import missing_package

    try:
        optimizer.init({"x": torch.zeros(2)})
    except ValueError as exc:
        raise ConfigError(
            f"{spec.where}: optimizer '{spec.name}' rejects its config: {exc}"
        ) from None
    except ModuleNotFoundError as exc:
        raise missing_package(exc, spec.where) from None
    except Exception:  # the probe is not a problem this optimizer runs on: the run decides
        return


def score_users(task: Task) -> list[str]:
    """What reads the task's top-level ``score``: its hyperoptimizers and ``budget.target``."""
    users = [f"hyperoptimizer '{h.label}'" for h in task.hyperoptimizers]
    if task.budget.target is not None:
        users.append("budget.target")
    return users


def check_score(task: Task, objectives: Mapping[str, Any]) -> None:
    """``score`` must be used by something, and declared by every objective that it scores.

    Raises:
        ConfigError: ``score`` given where nothing uses it, or not among the metric names of
            an objective's ``metric_direction()`` (listed in the message).
    """
    users = score_users(task)
    if not users:
        if "score" in task.raw:
            raise _fail(
                task.source,
                f"score = {json.dumps(task.score)} is given but nothing uses it: 'score' is the"
                " metric a hyperoptimizer minimizes and budget.target compares with, and this task"
                " has neither. Remove 'score', or add a hyperoptimizer or budget.target.",
            )
        return
    for label, objective in objectives.items():
        declared = objective.metric_direction()
        if task.score not in declared:
            raise _fail(
                task.source,
                f"score '{task.score}' (used by {', '.join(users)}) is not a metric of"
                f" objective '{label}', which declares: {', '.join(sorted(declared))}.",
            )


@dataclass
class CheckReport:
    """Outcome of :func:`check_task`: runnable cells and skipped ones with reasons."""

    runnable: list[Cell]
    skipped: list[tuple[Cell, str]]


def missing_requirements(registry: Registry, spec: ComponentSpec) -> str | None:
    """Why ``spec``'s plugin cannot run here (an optional package it declares in ``requires``
    is not installed, naming the extra to install), or ``None`` when nothing is missing."""
    cls = registry.get(spec.kind, spec.name)
    who = f"{spec.kind} '{spec.label}'"
    reasons = [r.missing_reason(who) for r in cls.missing_requirements()]
    return "; ".join(reasons) or None


def check_task(task: Task, registry: Registry | None = None) -> CheckReport:
    """Validate every component against its plugin and check pairings, before anything runs.

    Unknown plugin names and bad configs raise; so do values only the plugin or the library
    under it can judge (each optimizer is initialized on a tiny problem: ``torch.optim``
    rejects ``lr < 0`` there), and a ``score`` the objectives do not declare or that nothing
    uses. Incompatible pairings (``supports``) are skipped with the reason, and so are cells
    of a plugin whose declared optional package (``requires``) is not installed: the reason
    names the extra to install. If nothing is runnable, raises :class:`ConfigError`.
    """
    if registry is None:
        from optkit.registry import get_registry

        registry = get_registry()
    missing = {
        (s.kind, s.label): why
        for s in (*task.objectives, *task.optimizers, task.executor, *task.hyperoptimizers)
        if (why := missing_requirements(registry, s)) is not None
    }
    objectives = {
        s.label: registry.create("objective", s.spec(), s.where)
        for s in task.objectives
        if ("objective", s.label) not in missing
    }
    optimizers = {
        s.label: registry.create("optimizer", s.spec(), s.where)
        for s in task.optimizers
        if ("optimizer", s.label) not in missing
    }
    for label, optimizer in optimizers.items():
        probe_optimizer(optimizer, next(s for s in task.optimizers if s.label == label))
    check_score(task, objectives)
    executor = None
    if ("executor", task.executor.label) not in missing:
        executor = registry.create("executor", task.executor.spec(), task.executor.where)
    hypers = {
        h.label: registry.create("hyperoptimizer", h.spec(), h.where)
        for h in task.hyperoptimizers
        if ("hyperoptimizer", h.label) not in missing
    }
    runnable: list[Cell] = []
    skipped: list[tuple[Cell, str]] = []
    for cell in task.cells():
        parts = [cell.objective, cell.optimizer, task.executor]
        if cell.hyperoptimizer is not None:
            parts.append(cell.hyperoptimizer)
        absent = [missing[(p.kind, p.label)] for p in parts if (p.kind, p.label) in missing]
        if absent:
            skipped.append((cell, "; ".join(absent)))
            continue
        assert executor is not None
        objective = objectives[cell.objective.label]
        optimizer = optimizers[cell.optimizer.label]
        checks = [
            (f"optimizer '{cell.optimizer.label}'", optimizer.supports(objective)),
            (f"executor '{task.executor.name}'", executor.supports(objective)),
        ]
        if cell.hyperoptimizer is not None:
            hyper = hypers[cell.hyperoptimizer.label]
            checks.append(
                (
                    f"hyperoptimizer '{cell.hyperoptimizer.label}'",
                    hyper.supports(objective, optimizer),
                )
            )
        reasons = [f"{who}: {support.reason}" for who, support in checks if not support.ok]
        if reasons:
            skipped.append((cell, "; ".join(reasons)))
        else:
            runnable.append(cell)
    if not runnable:
        why = "; ".join(sorted({r for _, r in skipped}))
        raise ConfigError(f"{task.source}: no runnable cell in the matrix ({why})")
    if task.tuning is not None or task.target is not None:
        from optkit.tuning_spec import check_comparison

        check_comparison(task, objectives, registry)
    return CheckReport(runnable, skipped)
