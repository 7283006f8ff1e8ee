"""Name -> class lookup over the loaded plugins, and validated construction."""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from typing import Any

from optkit import plugins as plugin_loader
from optkit.config import validate_config
from optkit.context import CONTEXT_PARAMETER, RunContext, accepts_context
from optkit.errors import PluginError
from optkit.interfaces import KINDS, Plugin
from optkit.plugins import Clash, Entry, FailedPlugin, LoadedPlugins, UnknownHook


class Registry:
    """All registered objectives, optimizers, hyperoptimizers and executors.

    Use :func:`get_registry` for the process-wide instance built from the entry points.
    """

    def __init__(self, loaded: LoadedPlugins) -> None:
        self._loaded = loaded

    @property
    def failed(self) -> list[FailedPlugin]:
        return list(self._loaded.failed)

    @property
    def clashes(self) -> list[Clash]:
        """Names claimed by more than one plugin (see :meth:`check_clashes`)."""
        return list(self._loaded.clashes)

    @property
    def unknown_hooks(self) -> list[UnknownHook]:
        """Plugin functions that are never called (misspelled or unmarked hooks)."""
        return list(self._loaded.unknown_hooks)

    @property
    def artifacts(self) -> list[Any]:
        """The :class:`optkit.data.Artifact` records the plugins registered."""
        return [artifact for artifact, _ in self._loaded.artifacts]

    def check_clashes(self) -> None:
        """Raise :class:`PluginError` naming both sources of every clash, if there is one.

        ``run`` and ``check`` (everything that goes through :func:`get_registry`) refuse a
        registry with clashes: which class a name means would depend on load order.
        """
        if self._loaded.clashes:
            raise PluginError(_clash_message(self._loaded.clashes))

    def entries(self, kind: str | None = None) -> list[Entry]:
        kinds = [kind] if kind else list(KINDS)
        return [e for k in kinds for e in sorted(self._loaded.entries[k].values(), key=_key)]

    def listing(self) -> list[tuple[Entry, Clash | None]]:
        """Every registered class, clashing ones included, each with its clash (or ``None``);
        by kind, then name. For ``optkit plugins``, which lists everything."""
        clash_of = {(c.kind, c.name): c for c in self._loaded.clashes}
        out: list[tuple[Entry, Clash | None]] = []
        for kind in KINDS:
            for entry in sorted(self._loaded.entries[kind].values(), key=_key):
                clash = clash_of.get((kind, entry.name))
                others = clash.entries if clash is not None else (entry,)
                out.extend((e, clash) for e in others)
        return out

    def names(self, kind: str) -> list[str]:
        return sorted(self._loaded.entries[kind])

    def entry(self, kind: str, name: str) -> Entry:
        if kind not in KINDS:
            raise PluginError(f"unknown plugin kind '{kind}'; valid: {', '.join(KINDS)}")
        for clash in self._loaded.clashes:
            if clash.kind == kind and clash.name == name:
                raise PluginError(_clash_message([clash]))
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

    def create(
        self,
        kind: str,
        spec: Mapping[str, Any],
        where: str = "",
        *,
        context: RunContext | None = None,
    ) -> Any:
        """Instantiate ``spec["name"]`` of ``kind`` with the rest of ``spec`` as config.

        ``label`` is not passed on. A class whose ``__init__`` declares a keyword
        ``run_context`` receives ``context`` (default: a :class:`~optkit.context.RunContext`
        of this registry), so that whatever it builds comes from this registry too;
        ``run_context`` is not a config key. The instance records ``{"name": ..., **config}`` as its
        ``optkit_spec`` (declared on :class:`~optkit.interfaces.Plugin`), from which a
        launcher or a remote executor can rebuild it.

        Raises :class:`ConfigError` / :class:`PluginError` with ``where`` in the message:
        errors the plugin's own constructor raises (a ``ConfigError`` or ``ValueError`` about
        a value) get ``where`` (the task file) too, and a missing optional package is an
        :class:`~optkit.errors.EnvironmentProblem`.
        """
        if "name" not in spec:
            raise PluginError(f"{where}: the {kind} table needs a 'name'")
        cls = self.get(kind, str(spec["name"]))
        if context is None:
            context = RunContext(registry=self)
        elif context.registry is None:
            context = context.replace(registry=self)
        return construct(cls, spec, where, context)


def construct(cls: type[Plugin], spec: Mapping[str, Any], where: str, context: RunContext) -> Any:
    """Validate ``spec`` against ``cls`` and build it: what :meth:`Registry.create` does once
    it has found the class. A launcher or remote worker that was sent ``(cls, spec)`` rebuilds
    the component with this, exactly as the driver built it (see :meth:`Registry.create`)."""
    from optkit.envproblems import missing_package
    from optkit.errors import ConfigError

    kind = cls.kind or "plugin"
    config = {k: v for k, v in spec.items() if k not in ("name", "label")}
    where = where or f"{kind} '{spec['name']}'"
    if CONTEXT_PARAMETER in config:
        raise ConfigError(
            f"{where}: '{CONTEXT_PARAMETER}' is not a config key: the runner passes the run"
            " context itself; remove it"
        )
    config = validate_config(cls, config, where)
    recorded = {"name": spec["name"], **copy.deepcopy(config)}
    if accepts_context(cls):
        config[CONTEXT_PARAMETER] = context
    try:
        instance = cls(**config)
    except ConfigError as exc:
        if where in str(exc):
            raise
        raise ConfigError(f"{where}: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{where}: {kind} '{spec['name']}' rejects its config: {exc}") from None
    except ModuleNotFoundError as exc:
        raise missing_package(exc, where) from None
    instance.optkit_spec = recorded
    return instance


def _key(entry: Entry) -> str:
    return entry.name


def _clash_message(clashes: list[Clash]) -> str:
    return (
        "; ".join(str(c) for c in clashes)
        + ". optkit will not guess which one a task means: uninstall or rename one"
        " (`optkit plugins` lists every registration, clashes flagged)."
    )


_REGISTRY: Registry | None = None


def get_registry(*, reload: bool = False, allow_clashes: bool = False) -> Registry:
    """The process-wide registry, loading entry points on first use.

    Raises :class:`PluginError` naming both sources when two plugins claim one name, unless
    ``allow_clashes`` (``optkit plugins``, the diagnostic, lists them instead).
    """
    global _REGISTRY
    if _REGISTRY is None or reload:
        _REGISTRY = Registry(plugin_loader.load())
    if not allow_clashes:
        _REGISTRY.check_clashes()
    return _REGISTRY


def set_registry(registry: Registry | None) -> None:
    """Replace the process-wide registry (tests that register in-process plugins)."""
    global _REGISTRY
    _REGISTRY = registry
