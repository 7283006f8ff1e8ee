"""Name -> class lookup over the loaded plugins, and validated construction."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from optkit import plugins as plugin_loader
from optkit.config import validate_config
from optkit.errors import PluginError
from optkit.interfaces import KINDS, Plugin
from optkit.plugins import Entry, FailedPlugin, LoadedPlugins


class Registry:
    """All registered objectives, optimizers, hyperoptimizers and executors.

    Use :func:`get_registry` for the process-wide instance built from the entry points.
    """

    def __init__(self, loaded: LoadedPlugins) -> None:
        self._loaded = loaded

    @property
    def failed(self) -> list[FailedPlugin]:
        return list(self._loaded.failed)

    def entries(self, kind: str | None = None) -> list[Entry]:
        kinds = [kind] if kind else list(KINDS)
        return [e for k in kinds for e in sorted(self._loaded.entries[k].values(), key=_key)]

    def names(self, kind: str) -> list[str]:
        return sorted(self._loaded.entries[kind])

    def entry(self, kind: str, name: str) -> Entry:
        if kind not in KINDS:
            raise PluginError(f"unknown plugin kind '{kind}'; valid: {', '.join(KINDS)}")
        found = self._loaded.entries[kind].get(name)
        if found is None:
            names = self.names(kind)
            close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            failed = ""
            if self._loaded.failed:
                failed = (
                    " Plugins that failed to load: "
                    + ", ".join(f"'{f.plugin}' ({f.error})" for f in self._loaded.failed)
                    + "."
                )
            raise PluginError(
                f"unknown {kind} '{name}'.{hint} Registered {kind}s: {', '.join(names)}.{failed}"
            )
        return found

    def get(self, kind: str, name: str) -> type[Plugin]:
        return self.entry(kind, name).cls

    def create(self, kind: str, spec: Mapping[str, Any], where: str = "") -> Any:
        """Instantiate ``spec["name"]`` of ``kind`` with the rest of ``spec`` as config.

        ``label`` is not passed on. Raises :class:`ConfigError` / :class:`PluginError` with
        ``where`` in the message.
        """
        if "name" not in spec:
            raise PluginError(f"{where}: the {kind} table needs a 'name'")
        cls = self.get(kind, str(spec["name"]))
        config = {k: v for k, v in spec.items() if k not in ("name", "label")}
        config = validate_config(cls, config, where or f"{kind} '{spec['name']}'")
        return cls(**config)


def _key(entry: Entry) -> str:
    return entry.name


_REGISTRY: Registry | None = None


def get_registry(*, reload: bool = False) -> Registry:
    """The process-wide registry, loading entry points on first use."""
    global _REGISTRY
    if _REGISTRY is None or reload:
        _REGISTRY = Registry(plugin_loader.load())
    return _REGISTRY


def set_registry(registry: Registry | None) -> None:
    """Replace the process-wide registry (tests that register in-process plugins)."""
    global _REGISTRY
    _REGISTRY = registry
