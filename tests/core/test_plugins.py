"""Plugin loading through real entry points: broken plugins, strict mode, duplicates."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from optkit_synthetic.functions import Sphere

from optkit import hookimpl
from optkit.errors import PluginError
from optkit.interfaces import Objective
from optkit.plugins import PluginLoadWarning, load
from optkit.registry import Registry


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


def test_duplicate_names_name_both_sources(site: Path) -> None:
    make_distribution(
        site,
        "dup_dist",
        {"dup": "fake_optkit_dup"},
        {
            "fake_optkit_dup": """
            from optkit import hookimpl
            from optkit_synthetic.functions import Sphere
            class MySphere(Sphere):
                pass
            @hookimpl
            def optkit_register_objectives(register):
                register(MySphere)
            """
        },
    )
    with pytest.raises(PluginError) as info:
        load()
    message = str(info.value)
    assert "'sphere' is registered twice" in message
    assert "plugin 'synthetic' (optkit" in message and "plugin 'dup' (dup_dist 1.0)" in message


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
