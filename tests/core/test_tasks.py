"""Task files: validation, overrides, matrix expansion, compatibility."""

from __future__ import annotations

from pathlib import Path

import pytest

from optkit.errors import ConfigError, PluginError
from optkit.tasks import check_task, load_task

BASE = """
name = "t"
seeds = [0, 1]
budget = { iterations = 5 }
objective = { name = "sphere", dim = 4 }
optimizers = [ { name = "adam", lr = 0.1 }, { name = "sgd", lr = 0.1, label = "plain-sgd" } ]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "task.toml"
    path.write_text(text)
    return path


def test_matrix_expands_objective_optimizer_seed(tmp_path: Path) -> None:
    task = load_task(write(tmp_path, BASE))
    assert [c.key for c in task.cells()] == [
        "sphere|adam|0",
        "sphere|adam|1",
        "sphere|plain-sgd|0",
        "sphere|plain-sgd|1",
    ]
    assert task.executor.name == "serial"


def test_overrides_reach_nested_keys(tmp_path: Path) -> None:
    task = load_task(
        write(tmp_path, BASE), ["budget.iterations=9", "optimizers.1.lr=0.5", "objective.dim=7"]
    )
    assert task.budget.iterations == 9
    assert task.optimizers[1].config["lr"] == 0.5
    assert task.objectives[0].config["dim"] == 7


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("name = 't'\nbudget = {", "not valid TOML"),
        (BASE.replace('name = "t"', ""), "'name' is required"),
        (BASE + "\nsedes = [1]\n", r"unknown key 'sedes'\. Did you mean 'seeds'"),
        (
            BASE.replace("iterations = 5", "iterations = -3"),
            "budget.iterations' must be an integer > 0",
        ),
        (BASE.replace("iterations = 5", "iterations = 5, evry = 2"), "unknown key 'budget.evry'"),
        (BASE.replace("seeds = [0, 1]", "seeds = 'zero'"), "'seeds' must be a non-empty list"),
        (BASE.replace('label = "plain-sgd"', 'label = "adam"'), "both have label 'adam'"),
        (BASE.replace('objective = { name = "sphere", dim = 4 }', ""), "key 'objective'"),
        (BASE + '\ndevice = "tpu"\n', "'device' must be one of"),
    ],
)
def test_bad_task_files_are_clear_errors(tmp_path: Path, text: str, match: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=match) as info:
        load_task(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("replace", "error", "match"),
    [
        (
            ("dim = 4", 'dim = "four"'),
            ConfigError,
            r"key 'dim' of objective 'sphere' must be int, got 'four'",
        ),
        (
            ("lr = 0.1 }", "lr = 0.1, lrr = 2 }"),
            ConfigError,
            r"unknown key 'lrr'.*Did you mean 'lr'.*Valid keys: amsgrad",
        ),
        (
            ('name = "sphere"', 'name = "spere"'),
            PluginError,
            r"unknown objective 'spere'\. Did you mean 'sphere'",
        ),
    ],
)
def test_plugin_configs_are_checked_before_running(
    tmp_path: Path, replace: tuple[str, str], error: type[Exception], match: str
) -> None:
    task = load_task(write(tmp_path, BASE.replace(*replace, 1)))
    with pytest.raises(error, match=match):
        check_task(task)


def test_incompatible_pairings_are_skipped_with_a_reason(tmp_path: Path) -> None:
    from optkit import Objective

    class NotVmappable(Objective):
        """A loss that cannot run under vmap."""

        name = "branchy"
        summary = "test"
        vmappable = False

        def init_params(self, generator):  # type: ignore[no-untyped-def]
            raise AssertionError("never run")

        def loss(self, params, batch):  # type: ignore[no-untyped-def]
            raise AssertionError("never run")

        def evaluate(self, params):  # type: ignore[no-untyped-def]
            raise AssertionError("never run")

    from optkit import hookimpl
    from optkit.plugins import load
    from optkit.registry import Registry

    class Hooks:
        @hookimpl
        def optkit_register_objectives(self, register):  # type: ignore[no-untyped-def]
            register(NotVmappable)

    registry = Registry(load(extra_plugins=[("t", Hooks())]))
    text = (
        BASE.replace(
            'objective = { name = "sphere", dim = 4 }',
            'objectives = [ { name = "sphere", dim = 4 }, { name = "branchy" } ]',
        )
        + '\nexecutor = { name = "vmap" }\n'
    )
    report = check_task(load_task(write(tmp_path, text)), registry)
    assert len(report.runnable) == 4 and len(report.skipped) == 4
    assert all("not vmappable" in reason for _, reason in report.skipped)
    only_bad = text.replace('{ name = "sphere", dim = 4 }, ', "")
    with pytest.raises(ConfigError, match="no runnable cell"):
        check_task(load_task(write(tmp_path, only_bad)), registry)


def test_hyperoptimizers_are_a_matrix_dimension(tmp_path: Path) -> None:
    text = BASE + (
        '\nhyperoptimizers = [ { name = "random_search", trials = 2, space = { "optimizer.lr" ='
        ' { low = 0.01, high = 0.1 } } }, { name = "random_search", trials = 4, space ='
        ' { "optimizer.lr" = { low = 0.01, high = 0.1 } }, label = "rs4" } ]\n'
    )
    task = load_task(write(tmp_path, text))
    keys = [c.key for c in task.cells()]
    assert len(keys) == 2 * 2 * 2
    assert keys[:2] == ["sphere|random_search:adam|0", "sphere|random_search:adam|1"]
    assert "sphere|rs4:plain-sgd|1" in keys
    both = text.replace(
        "hyperoptimizers = [", 'hyperoptimizer = { name = "x" }\nhyperoptimizers = ['
    )
    with pytest.raises(ConfigError, match="either 'hyperoptimizer'"):
        load_task(write(tmp_path, both))
