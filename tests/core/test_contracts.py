"""Every registered plugin passes the contract kits of optkit.testing.

The parametrization is read from the live registry, so a newly registered plugin is checked
without touching this file. Classes whose checks need an extra data download declare
``test_marks`` (e.g. ``("nlp",)``) and get those pytest markers.
"""

from __future__ import annotations

import pytest

from optkit.errors import ConfigError, DataError
from optkit.interfaces import HyperContext, HyperResult, Objective
from optkit.registry import get_registry
from optkit.testing import (
    check_executor,
    check_hyperoptimizer,
    check_objective,
    check_optimizer,
    example_config,
)

REGISTRY = get_registry()


def params_for(kind: str) -> list[pytest.param]:  # type: ignore[valid-type]
    out = []
    for entry in REGISTRY.entries(kind):
        marks = [getattr(pytest.mark, m) for m in entry.cls.test_marks]
        out.append(pytest.param(entry.name, id=entry.name, marks=marks))
    return out


def _unavailable_data(objective: Objective) -> list[str]:
    """The objective's data artifacts that are neither cached nor served by any source today."""
    needed = objective.data_artifacts()
    if not needed:
        return []
    import optkit.data

    found = optkit.data.statuses(needed)
    return [name for name in needed if found[name].state == "unavailable"]


@pytest.mark.parametrize("name", params_for("objective"))
def test_objective_contract(name: str) -> None:
    """The whole kit; or, for an objective whose data no source serves today (BIG-bench since
    2026-12) and that nobody added, the clear error that says how to add a copy."""
    cls = REGISTRY.get("objective", name)
    objective = REGISTRY.create("objective", {"name": name, **example_config(cls)})
    missing = _unavailable_data(objective)
    if not missing:
        check_objective(objective)
        return
    with pytest.raises(DataError, match=rf"optkit data add {missing[0]} PATH"):
        check_objective(objective)


@pytest.mark.parametrize("name", params_for("optimizer"))
def test_optimizer_contract(name: str) -> None:
    cls = REGISTRY.get("optimizer", name)
    check_optimizer(REGISTRY.create("optimizer", {"name": name, **example_config(cls)}))


@pytest.mark.parametrize("name", params_for("executor"))
def test_executor_contract(name: str) -> None:
    cls = REGISTRY.get("executor", name)
    check_executor(REGISTRY.create("executor", {"name": name, **example_config(cls)}))


KNOWN_GAPS: dict[str, str] = {}
"""Hyperoptimizers the kit is known to fail (strict xfail: fixing one turns its test red)."""


def hyper_params() -> list[pytest.param]:  # type: ignore[valid-type]
    out = []
    for param in params_for("hyperoptimizer"):
        name = param.values[0]
        marks = list(param.marks)
        if name in KNOWN_GAPS:
            gap = pytest.mark.xfail(strict=True, raises=ConfigError, reason=KNOWN_GAPS[name])
            marks.append(gap)
        out.append(pytest.param(name, id=name, marks=marks))
    return out


@pytest.mark.parametrize("name", hyper_params())
def test_hyperoptimizer_contract(name: str) -> None:
    """Black-box ones run the whole kit on the reference pairing; gradient-based ones that
    need a LoRA text objective (Flexora) must refuse it with a reason."""
    cls = REGISTRY.get("hyperoptimizer", name)
    check_hyperoptimizer(REGISTRY.create("hyperoptimizer", {"name": name, **example_config(cls)}))


def test_the_hyperoptimizer_kit_catches_a_broken_one() -> None:
    """A kit that cannot fail is worthless: a search that keeps its *worst* trial, one that
    picks a failed trial, and one that reruns resumed trials are each caught."""
    from optkit_hpo.random_search import RandomSearch

    space = {"optimizer.lr": {"low": 1e-3, "high": 0.5, "log": True}}

    class KeepsWorst(RandomSearch):
        name = "keeps_worst"

        def optimize(self, context: HyperContext) -> HyperResult:
            result = super().optimize(context)
            worst = max(result.trials, key=lambda t: t.score)
            return HyperResult(worst.config, worst.score, result.trials)

    class PicksFailed(RandomSearch):
        name = "picks_failed"

        def optimize(self, context: HyperContext) -> HyperResult:
            result = super().optimize(context)
            failed = [t for t in result.trials if t.score != t.score]
            chosen = failed[0] if failed else min(result.trials, key=lambda t: t.score)
            best = min(t.score for t in result.trials if t.score == t.score)
            return HyperResult(chosen.config, best, result.trials)

    class Forgetful(RandomSearch):
        name = "forgetful"

        def optimize(self, context: HyperContext) -> HyperResult:
            context.completed = []
            return super().optimize(context)

    with pytest.raises(AssertionError, match="is not the best finite trial score"):
        check_hyperoptimizer(KeepsWorst(space=space, trials=3))
    with pytest.raises(AssertionError, match="failed trials must never be chosen"):
        check_hyperoptimizer(PicksFailed(space=space, trials=3))
    with pytest.raises(AssertionError, match="was run again on resume"):
        check_hyperoptimizer(Forgetful(space=space, trials=3))
    check_hyperoptimizer(RandomSearch(space=space, trials=3))  # the unbroken one passes


def test_every_plugin_documents_itself() -> None:
    for entry in REGISTRY.entries():
        assert entry.cls.summary, f"{entry.kind} '{entry.name}' has no summary"
        assert entry.cls.__doc__, f"{entry.kind} '{entry.name}' has no docstring"


def test_the_kits_catch_a_broken_optimizer() -> None:
    """A kit that cannot fail is worthless: an optimizer that mutates its input is caught."""
    from optkit_baselines.torch_optim import SGD

    class Mutating(SGD):
        name = "mutating"

        def update(self, params, grads, state):  # type: ignore[no-untyped-def]
            params["x"].add_(1.0)
            return super().update(params, grads, state)

    with pytest.raises(AssertionError, match="must not be mutated"):
        check_optimizer(Mutating(lr=0.1))
