"""Plugin loading through real entry points: broken plugins, strict mode, duplicates."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from optkit_synthetic.functions import Sphere

from optkit import hookimpl
from optkit.cli import main
from optkit.errors import PluginError
from optkit.interfaces import Objective
from optkit.plugins import PluginLoadWarning, UnknownHookWarning, load
from optkit.registry import Registry, set_registry


def make_distribution(
    root: Path, dist: str, entry_points: dict[str, str], modules: dict[str, str]
) -> None:
    """Write a real installed-distribution layout (dist-info + modules) under ``root``."""
    info = root / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[optkit]\n{lines}\n")
    for name, source in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("fake_optkit_")]:
        del sys.modules[name]


def test_builtins_register_through_entry_points() -> None:
    registry = Registry(load())
    sources = {e.source.plugin for e in registry.entries()}
    assert {"core", "baselines", "synthetic"} <= sources
    entry = registry.entry("optimizer", "adam")
    assert entry.source.distribution == "optkit"
    assert registry.entry("executor", "vmap").source.plugin == "core"


def test_broken_plugin_is_a_warning_and_the_rest_load(site: Path) -> None:
    make_distribution(
        site,
        "broken_dist",
        {"broken": "fake_optkit_broken"},
        {"fake_optkit_broken": "import not_a_real_module_xyz\n"},
    )
    with pytest.warns(PluginLoadWarning, match=r"'broken'.*broken_dist.*not_a_real_module_xyz"):
        loaded = load()
    registry = Registry(loaded)
    assert [f.plugin for f in registry.failed] == ["broken"]
    assert "adam" in registry.names("optimizer")  # the others still load
    with pytest.raises(PluginError, match="failed to load: 'broken'"):
        registry.get("objective", "brokn")


def test_strict_mode_makes_a_broken_plugin_an_error(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_distribution(
        site,
        "broken_dist",
        {"broken": "fake_optkit_broken2"},
        {"fake_optkit_broken2": "raise RuntimeError('boom at import')\n"},
    )
    monkeypatch.setenv("OPTKIT_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match=r"plugin 'broken'.*boom at import"):
        load()


def test_a_hook_that_raises_is_reported_as_that_plugin(site: Path) -> None:
    make_distribution(
        site,
        "raising_dist",
        {"raising": "fake_optkit_raising"},
        {
            "fake_optkit_raising": """
            from optkit import hookimpl
            @hookimpl
            def optkit_register_objectives(register):
                raise ValueError("cannot register today")
            """
        },
    )
    with pytest.warns(PluginLoadWarning, match="'raising'.*cannot register today"):
        registry = Registry(load())
    assert "sphere" in registry.names("objective")


DUPLICATE_SPHERE = """
from optkit import hookimpl
from optkit_synthetic.functions import Sphere
class MySphere(Sphere):
    pass
@hookimpl
def optkit_register_objectives(register):
    register(MySphere)
"""


def test_duplicate_names_are_recorded_with_both_sources_and_refused(site: Path) -> None:
    make_distribution(
        site, "dup_dist", {"dup": "fake_optkit_dup"}, {"fake_optkit_dup": DUPLICATE_SPHERE}
    )
    registry = Registry(load())  # loading records the clash instead of raising
    [clash] = registry.clashes
    assert (clash.kind, clash.name) == ("objective", "sphere")
    listed = [(e.source.plugin, c is not None) for e, c in registry.listing() if e.name == "sphere"]
    assert sorted(listed) == [("dup", True), ("synthetic", True)]
    with pytest.raises(PluginError) as info:
        registry.check_clashes()
    message = str(info.value)
    assert "'sphere' is registered twice" in message
    assert "plugin 'synthetic' (optkit" in message and "plugin 'dup' (dup_dist 1.0)" in message
    assert "fake_optkit_dup.MySphere" in message and "optkit_synthetic.functions.Sphere" in message
    with pytest.raises(PluginError, match="'sphere' is registered twice"):
        registry.create("objective", {"name": "sphere", "dim": 2})
    assert registry.get("optimizer", "adam").name == "adam"  # unrelated names still resolve


def test_two_entry_points_with_one_name_are_a_clash(site: Path) -> None:
    hooks = {"fake_optkit_twin_a": "", "fake_optkit_twin_b": ""}
    make_distribution(site, "twin_a", {"twin": "fake_optkit_twin_a"}, hooks)
    make_distribution(site, "twin_b", {"twin": "fake_optkit_twin_b"}, {})
    registry = Registry(load())
    [clash] = registry.clashes
    assert (clash.kind, clash.name) == ("plugin", "twin")
    with pytest.raises(PluginError, match=r"entry point 'twin'.*twin_a 1\.0.*twin_b 1\.0"):
        registry.check_clashes()


MISSPELLED = """
from optkit import hookimpl
from optkit_synthetic.functions import Sphere
class Typo(Sphere):
    name = "typo_sphere"
@hookimpl
def optkit_register_objectvies(register):
    register(Typo)
@hookimpl
def optkit_register_optimizers(register):
    pass
"""


def test_a_misspelled_hook_is_a_warning_naming_plugin_and_hook(site: Path) -> None:
    make_distribution(
        site, "typo_dist", {"typo": "fake_optkit_typo"}, {"fake_optkit_typo": MISSPELLED}
    )
    with pytest.warns(UnknownHookWarning) as caught:
        loaded = load()
    [warning] = [w for w in caught if issubclass(w.category, UnknownHookWarning)]
    message = str(warning.message)
    assert "plugin 'typo' (from typo_dist)" in message
    assert "'optkit_register_objectvies' matches no optkit hook" in message
    assert "Did you mean 'optkit_register_objectives'?" in message
    registry = Registry(loaded)
    [unknown] = registry.unknown_hooks
    assert (unknown.plugin, unknown.hook) == ("typo", "optkit_register_objectvies")
    assert registry.failed == []  # the plugin loaded; its other hooks still count
    assert "sphere" in registry.names("objective")


def test_a_misspelled_hook_is_an_error_in_strict_mode(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_distribution(
        site, "typo_dist", {"typo": "fake_optkit_typo2"}, {"fake_optkit_typo2": MISSPELLED}
    )
    monkeypatch.setenv("OPTKIT_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match=r"plugin 'typo'.*'optkit_register_objectvies'"):
        load()


def test_a_hook_function_without_the_marker_is_a_warning(site: Path) -> None:
    source = """
    from optkit_synthetic.functions import Sphere
    def optkit_register_objectives(register):
        register(Sphere)
    """
    make_distribution(
        site, "nomark_dist", {"nomark": "fake_optkit_nomark"}, {"fake_optkit_nomark": source}
    )
    with pytest.warns(UnknownHookWarning, match=r"'nomark'.*not marked @optkit.hookimpl"):
        load()


def test_builtin_plugins_load_without_warnings(recwarn: pytest.WarningsRecorder) -> None:
    loaded = load()
    assert [str(w.message) for w in recwarn.list] == []
    assert loaded.unknown_hooks == [] and loaded.clashes == [] and loaded.failed == []


def test_registering_a_non_plugin_class_is_reported() -> None:
    class NotAnObjective:
        name = "nope"

    class Hooks:
        @hookimpl
        def optkit_register_objectives(self, register):  # type: ignore[no-untyped-def]
            register(NotAnObjective)

    with pytest.warns(PluginLoadWarning, match="not a Objective"):
        load(extra_plugins=[("bad_inprocess", Hooks())])


def test_in_process_plugins_register_classes() -> None:
    class Shifted(Sphere):
        name = "shifted_sphere"

    class Hooks:
        @hookimpl
        def optkit_register_objectives(self, register):  # type: ignore[no-untyped-def]
            register(Shifted)

    registry = Registry(load(extra_plugins=[("mine", Hooks())]))
    assert registry.get("objective", "shifted_sphere") is Shifted
    assert issubclass(registry.get("objective", "shifted_sphere"), Objective)


def test_unknown_name_lists_close_names() -> None:
    registry = Registry(load())
    with pytest.raises(PluginError, match=r"unknown optimizer 'adma'\. Did you mean .*'adam'"):
        registry.get("optimizer", "adma")


@pytest.fixture
def fresh_registry() -> Iterator[None]:
    """The CLI uses the process-wide registry: rebuild it from this test's entry points."""
    set_registry(None)
    yield
    set_registry(None)


CLASH_TASK = """
name = "clash-task"
seeds = [0]
budget = { iterations = 2 }
objective = { name = "rosenbrock", dim = 2 }
optimizers = [ { name = "adam", lr = 0.01 } ]
"""


def test_cli_plugins_lists_a_clash_and_exits_0_while_run_and_check_refuse(
    site: Path, fresh_registry: None, capsys: pytest.CaptureFixture[str]
) -> None:
    make_distribution(
        site, "dup_dist", {"dup": "fake_optkit_dup_cli"}, {"fake_optkit_dup_cli": DUPLICATE_SPHERE}
    )
    assert main(["plugins", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    spheres = [p for p in payload["plugins"] if p["name"] == "sphere"]
    assert sorted(p["plugin"] for p in spheres) == ["dup", "synthetic"]
    assert all(p["clash"] for p in spheres)
    assert not any(p["clash"] for p in payload["plugins"] if p["name"] != "sphere")
    assert [(c["kind"], c["name"]) for c in payload["clashes"]] == [("objective", "sphere")]
    assert main(["plugins"]) == 0
    text = capsys.readouterr().out
    assert text.count("CLASH") == 2 and "name clashes" in text and "dup_dist 1.0" in text

    task = site / "task.toml"
    task.write_text(CLASH_TASK)  # uses neither clashing class: still refused
    out = site / "out"
    for argv in (["check", str(task)], ["run", str(task), "--out", str(out)]):
        assert main(argv) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert "'sphere' is registered twice" in err
        assert "plugin 'synthetic' (optkit" in err and "plugin 'dup' (dup_dist 1.0)" in err
    assert not out.exists()


def test_cli_plugins_shows_a_misspelled_hook(
    site: Path, fresh_registry: None, capsys: pytest.CaptureFixture[str]
) -> None:
    make_distribution(
        site, "typo_dist", {"typo": "fake_optkit_typo_cli"}, {"fake_optkit_typo_cli": MISSPELLED}
    )
    with pytest.warns(UnknownHookWarning):
        assert main(["plugins", "--json"]) == 0
    [unknown] = json.loads(capsys.readouterr().out)["unknown_hooks"]
    assert unknown["plugin"] == "typo" and unknown["hook"] == "optkit_register_objectvies"
    assert unknown["suggestion"] == "optkit_register_objectives"
