"""Context is passed, not looked up: RunContext, recorded specs, declared attributes, and a
private registry that reaches every nested pairing."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from optkit_baselines.torch_optim import SGD
from optkit_synthetic.functions import Rosenbrock

import optkit
from optkit import hookimpl
from optkit.context import RunContext, prepare_objective
from optkit.errors import ConfigError
from optkit.executors import SerialExecutor
from optkit.interfaces import Objective, Plugin, Requirement
from optkit.plugins import load
from optkit.registry import Registry, get_registry
from optkit.results import RunDirectory


class PrivateSGD(SGD):
    """SGD under a name that only the private registry of these tests knows."""

    name: ClassVar[str] = "test_private_sgd"
    summary: ClassVar[str] = "SGD, registered only in a private registry"


class EventfulSerial(SerialExecutor):
    """The serial executor, reporting one diagnostic event."""

    name: ClassVar[str] = "test_eventful"
    summary: ClassVar[str] = "serial, with a diagnostic"

    def diagnostics(self) -> list[dict[str, Any]]:
        return [{"event": "test_event", "round": 0}]


class Hooks:
    @hookimpl
    def optkit_register_optimizers(self, register):  # type: ignore[no-untyped-def]
        register(PrivateSGD)

    @hookimpl
    def optkit_register_executors(self, register):  # type: ignore[no-untyped-def]
        register(EventfulSerial)


@pytest.fixture(scope="module")
def private() -> Registry:
    return Registry(load(extra_plugins=[("private", Hooks())]))


def rows_of(out: Path) -> list[dict[str, Any]]:
    return RunDirectory(out).rows()


def test_an_objective_built_by_hand_has_real_device_and_dtype() -> None:
    """Before prepare() runs, device/dtype are CPU/float32, not a dataclasses.Field."""
    objective = Rosenbrock(dim=3)
    assert objective.device == torch.device("cpu") and objective.dtype == torch.float32
    params = objective.init_params(torch.Generator().manual_seed(0))
    assert params["x"].shape == (3,) and params["x"].dtype == torch.float32
    assert objective.run_context is None


def test_plugin_declares_what_tools_read() -> None:
    for attribute in ("test_config", "test_marks", "requires", "optkit_spec"):
        assert hasattr(Plugin, attribute), attribute
    assert Objective.test_config == {} and Objective.optkit_spec is None


def test_create_records_the_spec_and_passes_its_context(private: Registry) -> None:
    optimizer = private.create("optimizer", {"name": "data_parallel", "base": "sgd", "label": "x"})
    assert optimizer.optkit_spec == {"name": "data_parallel", "base": "sgd"}
    assert optimizer.base.optkit_spec == {"name": "sgd"}
    with pytest.raises(ConfigError, match="'run_context' is not a config key"):
        private.create("optimizer", {"name": "data_parallel", "run_context": 1})


def test_a_wrapper_builds_its_base_from_the_callers_registry(private: Registry) -> None:
    spec = {"name": "data_parallel", "base": "test_private_sgd", "base_config": {"lr": 0.1}}
    wrapper = private.create("optimizer", spec)
    assert isinstance(wrapper.base, PrivateSGD)
    with pytest.raises(optkit.PluginError, match="unknown base optimizer 'test_private_sgd'"):
        get_registry().create("optimizer", spec)  # the process-wide registry lacks it


def test_prepare_gets_the_context_in_either_signature() -> None:
    seen: list[Any] = []

    class Old(Rosenbrock):
        def prepare(self, device: torch.device, dtype: torch.dtype) -> None:
            seen.append(("old", self.run_context))
            super().prepare(device, dtype)

    class New(Rosenbrock):
        def prepare(
            self,
            device: torch.device,
            dtype: torch.dtype,
            run_context: RunContext | None = None,
        ) -> None:
            seen.append(("new", run_context))
            super().prepare(device, dtype)

    context = RunContext(torch.device("cpu"), torch.float64, seed=3)
    for cls in (Old, New):
        objective = cls(dim=2)
        prepare_objective(objective, context)
        assert objective.dtype == torch.float64 and objective.run_context is context
    assert seen == [("old", context), ("new", context)]
    assert context.generator().initial_seed() == 3


def test_a_private_registry_reaches_nested_pairings(tmp_path: Path, private: Registry) -> None:
    """data_parallel wrapping a base that only the private registry holds runs as a cell;
    random_search over that base checks its space against the private registry and runs its
    trials from it; the executor's diagnostics() land in the end row."""
    plain = {
        "name": "private-nested",
        "seeds": [0],
        "budget": {"iterations": 4, "eval_every": 2},
        "objective": {"name": "sphere", "dim": 3},
        "optimizer": {
            "name": "data_parallel",
            "base": "test_private_sgd",
            "base_config": {"lr": 0.1},
            "parallelism": 2,
        },
        "executor": {"name": "test_eventful"},
    }
    hyper = {
        **plain,
        "executor": {"name": "serial"},
        "optimizer": {"name": "test_private_sgd", "lr": 0.1},
        "hyperoptimizer": {
            "name": "random_search",
            "trials": 2,
            "space": {"optimizer.lr": {"low": 0.01, "high": 0.2}},
        },
    }
    for name, spec in (("plain", plain), ("hyper", hyper)):
        summary = optkit.run(spec, tmp_path / name, registry=private)
        assert summary.cells_failed == [], name
        ends = [r for r in rows_of(tmp_path / name) if r["event"] == "end"]
        assert ends and all(r["status"] == "ok" for r in ends), ends
    end = next(r for r in rows_of(tmp_path / "plain") if r["event"] == "end")
    assert end["executor_events"] == [{"event": "test_event", "round": 0}]
    trials = [r for r in rows_of(tmp_path / "hyper") if r["event"] == "trial"]
    assert len(trials) == 2 and all(t["error"] is None for t in trials), trials
    with pytest.raises(optkit.PluginError, match="test_private_sgd"):
        optkit.run({**plain, "executor": {"name": "serial"}}, tmp_path / "global")


def test_requirement_names_the_extra() -> None:
    present, absent = Requirement("torch", "core"), Requirement("no_such_module_xyz", "demo")
    assert present.available() and not absent.available()
    assert "pip install 'optkit[demo]'" in absent.missing_reason("optimizer 'x'")
