"""Load plugins from the ``optkit`` entry-point group, one at a time, defensively.

A plugin that fails to import (or whose registration hook raises) becomes a warning naming it
and its error, and the rest still load; ``OPTKIT_STRICT_PLUGINS=1`` turns that into an error.
Two plugins registering the same name for the same kind is always an error naming both.
"""

from __future__ import annotations

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
}


class PluginLoadWarning(UserWarning):
    """A plugin could not be loaded; the others still are."""


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


@dataclass
class LoadedPlugins:
    entries: dict[str, dict[str, Entry]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS}
    )
    failed: list[FailedPlugin] = field(default_factory=list)


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
            raise PluginError(
                f"two entry points are named '{ep.name}': {sources[ep.name]} and"
                f" {dist} {version}. Rename one of them."
            )
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
    return result


def _check_class(cls: Any, kind: str, source: Source) -> None:
    base = KINDS[kind]
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise TypeError(f"{HOOKS[kind]} registered {cls!r}, which is not a {base.__name__}")
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no class attribute 'name'")


def _add(result: LoadedPlugins, entry: Entry) -> None:
    existing = result.entries[entry.kind].get(entry.name)
    if existing is not None:
        raise PluginError(
            f"{entry.kind} name '{entry.name}' is registered twice: by {existing.source}"
            f" ({existing.cls.__module__}.{existing.cls.__qualname__}) and by {entry.source}"
            f" ({entry.cls.__module__}.{entry.cls.__qualname__}). Uninstall or rename one."
        )
    result.entries[entry.kind][entry.name] = entry
