"""Load plugins from the ``optkit`` entry-point group, one at a time, defensively.

A plugin that fails to import (or whose registration hook raises) becomes a warning naming it
and its error, and the rest still load. A hook implementation that matches no hook
specification (a misspelled hook such as ``optkit_register_objectvies``, which pluggy would
otherwise never call) is a warning naming the plugin and the hook.
``OPTKIT_STRICT_PLUGINS=1`` turns both into errors.

Two plugins registering the same name for the same kind (or two entry points with one name)
are a *clash*: loading records it with both sources, ``optkit plugins`` lists it flagged, and
:meth:`optkit.registry.Registry.check_clashes` (which ``run`` and ``check`` go through) refuses.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import pluggy

from optkit import hookspecs
from optkit.errors import PluginError
from optkit.interfaces import KINDS, Plugin

ENTRY_POINT_GROUP = "optkit"

HOOKS = {
    "objective": "optkit_register_objectives",
    "optimizer": "optkit_register_optimizers",
    "hyperoptimizer": "optkit_register_hyperoptimizers",
    "executor": "optkit_register_executors",
    "launcher": "optkit_register_launchers",
}


class PluginLoadWarning(UserWarning):
    """A plugin could not be loaded; the others still are."""


class UnknownHookWarning(PluginLoadWarning):
    """A plugin implements a hook that optkit does not define: that function is never called."""


@dataclass(frozen=True)
class Source:
    """Where a registered class came from: plugin (entry-point) name and its distribution."""

    plugin: str
    distribution: str
    version: str

    def __str__(self) -> str:
        return f"plugin '{self.plugin}' ({self.distribution} {self.version})"


@dataclass(frozen=True)
class Entry:
    """One registered class."""

    kind: str
    name: str
    cls: type[Plugin]
    source: Source


@dataclass(frozen=True)
class FailedPlugin:
    plugin: str
    distribution: str
    error: str


@dataclass(frozen=True)
class UnknownHook:
    """A function of ``plugin`` that pluggy will never call.

    Attributes:
        hook: the function's name, e.g. ``optkit_register_objectvies``.
        problem: why it is never called (no such hook, or not marked ``@optkit.hookimpl``).
        suggestion: the defined hook it was probably meant to be, or ``None``.
    """

    plugin: str
    distribution: str
    hook: str
    problem: str
    suggestion: str | None

    def __str__(self) -> str:
        hint = f" Did you mean '{self.suggestion}'?" if self.suggestion else ""
        return (
            f"plugin '{self.plugin}' (from {self.distribution}): '{self.hook}' {self.problem},"
            f" so it is never called.{hint} Hooks: {', '.join(HOOKS.values())}."
        )


@dataclass(frozen=True)
class Clash:
    """One name claimed more than once.

    Attributes:
        kind: ``objective``, ``optimizer``, ``hyperoptimizer``, ``executor``, or ``plugin``
            for two entry points of the group ``optkit`` with one name (the second is then
            not loaded).
        name: the contested name.
        claims: one description per claimant (source and class), in load order.
        entries: the registered classes involved (empty for ``kind == "plugin"``).
    """

    kind: str
    name: str
    claims: tuple[str, ...]
    entries: tuple[Entry, ...] = ()

    def __str__(self) -> str:
        what = "entry point" if self.kind == "plugin" else f"{self.kind} name"
        times = "twice" if len(self.claims) == 2 else f"{len(self.claims)} times"
        return f"{what} '{self.name}' is registered {times}: by {' and by '.join(self.claims)}"


@dataclass
class LoadedPlugins:
    entries: dict[str, dict[str, Entry]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS}
    )
    failed: list[FailedPlugin] = field(default_factory=list)
    clashes: list[Clash] = field(default_factory=list)
    unknown_hooks: list[UnknownHook] = field(default_factory=list)
    artifacts: list[tuple[Any, Source]] = field(default_factory=list)
    """``(optkit.data.Artifact, its plugin)`` from the ``optkit_register_artifacts`` hooks."""


def strict() -> bool:
    return os.environ.get("OPTKIT_STRICT_PLUGINS", "") not in ("", "0", "false", "False")


def _fail(result: LoadedPlugins, plugin: str, dist: str, exc: BaseException) -> None:
    message = f"{type(exc).__name__}: {exc}"
    if strict():
        raise PluginError(
            f"plugin '{plugin}' (from {dist}) failed to load: {message}."
            " Unset OPTKIT_STRICT_PLUGINS to load the other plugins anyway."
        ) from exc
    result.failed.append(FailedPlugin(plugin, dist, message))
    warnings.warn(
        f"optkit plugin '{plugin}' (from {dist}) failed to load and is skipped: {message}",
        PluginLoadWarning,
        stacklevel=3,
    )


def new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def load(extra_plugins: list[tuple[str, Any]] | None = None) -> LoadedPlugins:
    """Load every entry point of the group ``optkit`` and collect their registrations.

    Args:
        extra_plugins: ``(name, module_or_object)`` pairs registered in-process after the
            entry points (for tests and notebooks).
    """
    result = LoadedPlugins()
    pm = new_manager()
    sources: dict[str, Source] = {}
    eps = sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
    for ep in eps:
        dist = ep.dist.name if ep.dist is not None else "unknown"
        version = ep.dist.version if ep.dist is not None else "?"
        if ep.name in sources:
            claims = (str(sources[ep.name]), str(Source(ep.name, dist, version)))
            result.clashes.append(Clash("plugin", ep.name, claims))
            continue
        try:
            module = ep.load()
            pm.register(module, name=ep.name)
        except Exception as exc:  # a broken third-party plugin must not break the host
            _fail(result, ep.name, dist, exc)
            continue
        sources[ep.name] = Source(ep.name, dist, version)
    for name, obj in extra_plugins or []:
        pm.register(obj, name=name)
        sources[name] = Source(name, "(in-process)", "")
    for unknown in unknown_hooks(pm, sources):
        _unknown_hook(result, unknown)

    for kind, hook_name in HOOKS.items():
        hook = getattr(pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            source = sources[impl.plugin_name]
            collected: list[type[Plugin]] = []
            try:
                impl.function(register=collected.append)
                for cls in collected:
                    _check_class(cls, kind, source)
            except PluginError:
                raise
            except Exception as exc:
                _fail(result, source.plugin, source.distribution, exc)
                continue
            for cls in collected:
                _add(result, Entry(kind, cls.name, cls, source))
    _collect_artifacts(pm, sources, result)
    return result


def _collect_artifacts(
    pm: pluggy.PluginManager, sources: dict[str, Source], result: LoadedPlugins
) -> None:
    """Call every ``optkit_register_artifacts``; a plugin that fails or registers something
    that is not an :class:`optkit.data.Artifact` is a failed plugin, like any other."""
    from optkit.data.artifacts import Artifact

    for impl in pm.hook.optkit_register_artifacts.get_hookimpls():
        source = sources[impl.plugin_name]
        collected: list[Any] = []
        try:
            impl.function(register=collected.append)
            for item in collected:
                if not isinstance(item, Artifact):
                    raise TypeError(
                        f"optkit_register_artifacts registered {item!r}, which is not an"
                        " optkit.data.Artifact"
                    )
        except Exception as exc:
            _fail(result, source.plugin, source.distribution, exc)
            continue
        result.artifacts.extend((item, source) for item in collected)


def _check_class(cls: Any, kind: str, source: Source) -> None:
    base = KINDS[kind]
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise TypeError(f"{HOOKS[kind]} registered {cls!r}, which is not a {base.__name__}")
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no class attribute 'name'")


def unknown_hooks(pm: pluggy.PluginManager, sources: dict[str, Source]) -> list[UnknownHook]:
    """Functions of registered plugins that pluggy will never call, in plugin order.

    Two kinds: a function marked ``@optkit.hookimpl`` whose name matches no hook specification
    (what :meth:`pluggy.PluginManager.check_pending` rejects; checked here for every plugin
    instead of stopping at the first), and a module-level function named like a hook
    (``optkit_register_*``) that is not marked ``@optkit.hookimpl``.
    """
    found: list[UnknownHook] = []
    for name in sorted(vars(pm.hook)):
        if name.startswith("_"):
            continue
        caller = getattr(pm.hook, name)
        if caller.has_spec():
            continue
        for impl in caller.get_hookimpls():
            if impl.optionalhook:
                continue
            found.append(_unknown(sources, impl.plugin_name, name, "matches no optkit hook"))
    marker = f"{hookspecs.PROJECT}_impl"  # the attribute pluggy's HookimplMarker sets
    for plugin_name, plugin in pm.list_name_plugin():
        if plugin_name is None:
            continue
        for attr in dir(plugin):
            value = getattr(plugin, attr, None)
            if attr.startswith("optkit_register") and callable(value):
                if not hasattr(value, marker):
                    found.append(
                        _unknown(sources, plugin_name, attr, "is not marked @optkit.hookimpl")
                    )
    found.sort(key=lambda u: (u.plugin, u.hook))
    return found


def _unknown(sources: dict[str, Source], plugin: str, hook: str, problem: str) -> UnknownHook:
    source = sources.get(plugin)
    dist = source.distribution if source is not None else "unknown"
    close = difflib.get_close_matches(hook, list(HOOKS.values()), n=1, cutoff=0.6)
    suggestion = close[0] if close and close[0] != hook else None
    return UnknownHook(plugin, dist, hook, problem, suggestion)


def _unknown_hook(result: LoadedPlugins, unknown: UnknownHook) -> None:
    if strict():
        raise PluginError(f"{unknown} Unset OPTKIT_STRICT_PLUGINS to make this a warning.")
    result.unknown_hooks.append(unknown)
    warnings.warn(f"optkit {unknown}", UnknownHookWarning, stacklevel=3)


def _describe(entry: Entry) -> str:
    return f"{entry.source} ({entry.cls.__module__}.{entry.cls.__qualname__})"


def _add(result: LoadedPlugins, entry: Entry) -> None:
    """Register ``entry``; a second class under a taken name is recorded as a :class:`Clash`
    (the first stays the one that lookups would find, but the registry refuses to choose)."""
    existing = result.entries[entry.kind].get(entry.name)
    if existing is None:
        result.entries[entry.kind][entry.name] = entry
        return
    for i, clash in enumerate(result.clashes):
        if clash.kind == entry.kind and clash.name == entry.name:
            result.clashes[i] = Clash(
                entry.kind,
                entry.name,
                (*clash.claims, _describe(entry)),
                (*clash.entries, entry),
            )
            return
    result.clashes.append(
        Clash(entry.kind, entry.name, (_describe(existing), _describe(entry)), (existing, entry))
    )
