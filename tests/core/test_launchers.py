"""Launchers are a plugin kind; the core imports no plugin; optional packages are declared."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
from optkit_baselines.torch_optim import SGD

import optkit
from optkit import hookimpl
from optkit.cli import main
from optkit.errors import ConfigError, EnvironmentProblem, PluginError
from optkit.interfaces import CellBatch, Launcher, Requirement
from optkit.plugins import load
from optkit.registry import Registry
from optkit.results import RunDirectory
from optkit.runner import run_task
from optkit.tasks import check_task, validate_task

CORE = Path(optkit.__file__).parent

TASK = {
    "name": "launch",
    "seeds": [0, 1],
    "budget": {"iterations": 6, "eval_every": 3},
    "objective": {"name": "sphere", "dim": 4, "noise": 0.3},
    "optimizers": [{"name": "adam", "lr": 0.1}, {"name": "sgd", "lr": 0.05}],
}


class ShippingLauncher(Launcher):
    """Runs each cell from its plain payload, as a remote launcher does, in reverse order."""

    name: ClassVar[str] = "test_shipping"
    summary: ClassVar[str] = "payloads run in this process, last cell first"
    shipped: ClassVar[list[dict[str, Any]]] = []

    def launch(self, batch: CellBatch) -> None:
        for cell in reversed(batch.cells):
            payload = json.loads(json.dumps(batch.payload(cell)))  # plain data only
            type(self).shipped.append(payload)
            batch.deliver(batch.run_payload(payload))


class NeedsMissing(Launcher):
    name: ClassVar[str] = "test_needs_missing"
    summary: ClassVar[str] = "declares a package that is not installed"
    requires: ClassVar[tuple[Requirement, ...]] = (Requirement("no_such_module_xyz", "demo"),)

    def launch(self, batch: CellBatch) -> None:  # pragma: no cover - never reached
        raise AssertionError("a launcher with a missing requirement must not launch")


class MissingSGD(SGD):
    name: ClassVar[str] = "test_missing_sgd"
    summary: ClassVar[str] = "SGD that declares a package that is not installed"
    requires: ClassVar[tuple[Requirement, ...]] = (Requirement("no_such_module_xyz", "demo"),)


class Hooks:
    @hookimpl
    def optkit_register_launchers(self, register):  # type: ignore[no-untyped-def]
        register(ShippingLauncher)
        register(NeedsMissing)

    @hookimpl
    def optkit_register_optimizers(self, register):  # type: ignore[no-untyped-def]
        register(MissingSGD)


@pytest.fixture(scope="module")
def private() -> Registry:
    return Registry(load(extra_plugins=[("launchers", Hooks())]))


def finals(out: Path) -> dict[str, float]:
    return {r["cell"]: r["loss"] for r in RunDirectory(out).rows() if r["event"] == "end"}


def test_the_core_imports_no_plugin() -> None:
    """`optkit.OptEx` (a lazy re-export in optkit/__init__.py) is the one documented exception."""
    found = []
    for path in sorted(CORE.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.match(r"\s*(from|import)\s+optkit_", line):
                found.append(f"{path.relative_to(CORE.parent)}:{number}: {line.strip()}")
    assert len(found) == 1, found
    assert found[0].startswith("optkit/__init__.py:") and "import OptEx" in found[0]


def test_launchers_are_registered_plugins(private: Registry) -> None:
    assert {"local", "ray"} <= set(optkit.get_registry().names("launcher"))
    assert private.create("launcher", {"name": "local"}).optkit_spec == {"name": "local"}


def test_a_launcher_plugin_runs_cells_from_payloads(tmp_path: Path, private: Registry) -> None:
    """A launcher that ships plain payloads (as Ray does) gives the local launcher's rows."""
    task = validate_task(TASK, "launch.toml")
    run_task(task, tmp_path / "local", registry=private, progress=lambda m: None)
    ShippingLauncher.shipped.clear()
    summary = run_task(
        task, tmp_path / "shipped", registry=private, launcher="test_shipping", progress=print
    )
    assert summary.cells_run == 4 and summary.cells_failed == []
    assert ShippingLauncher.shipped[0]["cell"] == "sphere|sgd|1"
    assert finals(tmp_path / "shipped") == finals(tmp_path / "local")


def test_bad_launchers_are_refused_before_anything_is_written(
    tmp_path: Path, private: Registry
) -> None:
    task = validate_task(TASK, "launch.toml")
    with pytest.raises(PluginError, match=r"unknown launcher 'nowhere'.*local"):
        run_task(task, tmp_path / "a", registry=private, launcher="nowhere")
    with pytest.raises(EnvironmentProblem, match=r"pip install 'optkit\[demo\]'"):
        run_task(task, tmp_path / "b", registry=private, launcher="test_needs_missing")
    with pytest.raises(ConfigError, match="unknown key 'address' for launcher 'local'"):
        run_task(task, tmp_path / "c", registry=private, launcher={"name": "local", "address": 1})
    assert not any((tmp_path / d).exists() for d in "abc")


def test_cli_launcher_flag_and_the_deprecated_executor_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task = tmp_path / "t.toml"
    task.write_text(
        'name = "cli-launch"\nbudget = { iterations = 3 }\n'
        'objective = { name = "sphere", dim = 3 }\noptimizer = { name = "sgd", lr = 0.1 }\n'
    )
    assert main(["bench", str(task), "--out", str(tmp_path / "a"), "--launcher", "local"]) == 0
    assert main(["bench", str(task), "--out", str(tmp_path / "b"), "--executor", "local"]) == 0
    assert "--executor local is deprecated, use --launcher local" in capsys.readouterr().err
    assert finals(tmp_path / "a") == finals(tmp_path / "b")
    assert main(["bench", str(task), "--out", str(tmp_path / "c"), "--launcher", "nope"]) == 2
    assert "unknown launcher 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_a_missing_optional_package_is_an_incompatibility(private: Registry) -> None:
    """One handling: `check` skips the plugin's cells with the extra to install."""
    task = validate_task(
        {**TASK, "optimizers": [{"name": "sgd", "lr": 0.1}, {"name": "test_missing_sgd"}]},
        "req.toml",
    )
    report = check_task(task, private)
    assert [c.optimizer.name for c in report.runnable] == ["sgd", "sgd"]
    reasons = {reason for _, reason in report.skipped}
    assert reasons == {
        "optimizer 'test_missing_sgd' needs the Python package 'no_such_module_xyz', which is"
        " not installed: pip install 'optkit[demo]'"
    }
    alone = validate_task({**TASK, "optimizers": [{"name": "test_missing_sgd"}]}, "req.toml")
    with pytest.raises(ConfigError, match=r"no runnable cell.*pip install 'optkit\[demo\]'"):
        check_task(alone, private)


def test_tasks_parse_without_the_registry(tmp_path: Path) -> None:
    task = tmp_path / "t.toml"
    task.write_text(
        'name = "p"\nbudget = { iterations = 3 }\nobjective = { name = "sphere" }\n'
        'optimizer = { name = "sgd" }\n'
    )
    code = (
        "import sys\nfrom optkit.tasks import load_task\n"
        f"t = load_task({str(task)!r}, ['budget.iterations=5'])\n"
        "print(t.budget.iterations, [m for m in ('optkit.registry', 'optkit.plugins')"
        " if m in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["5", "[]"]


def test_the_manifest_versions_come_from_installed_metadata() -> None:
    from optkit.environment import package_versions, tracked_distributions

    names = tracked_distributions()
    assert names[0] == "optkit" and "torch" in names and "botorch" in names  # extras' packages
    assert "pytest" not in names  # the dev extra's tools are not the run's environment
    assert set(package_versions()) <= set(names)
