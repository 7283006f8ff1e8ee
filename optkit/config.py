"""Validate keyword configuration against a plugin class's ``__init__`` signature."""

from __future__ import annotations

import difflib
import inspect
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

from optkit.errors import ConfigError


def describe_type(tp: Any) -> str:
    """A short human name for a type hint (``float``, ``'a' | 'b'``, ``list[int]``)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(describe_type(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "None"
    if origin is not None:
        args = ", ".join(describe_type(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(tp, "__name__", str(tp))


def matches(value: Any, tp: Any) -> bool:
    """Whether a TOML-decoded ``value`` fits the type hint ``tp`` (ints fit floats)."""
    if tp is Any or tp is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        return value in args
    if origin in (Union, types.UnionType):
        return any(matches(value, a) for a in args)
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is bool:
        return isinstance(value, bool)
    if origin in (list, tuple, typing.Sequence, __import__("collections.abc").abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            pairs = zip(value, args, strict=False)
            return len(args) == len(value) and all(matches(v, a) for v, a in pairs)
        inner = args[0] if args else Any
        return all(matches(v, inner) for v in value)
    if origin in (dict, Mapping, typing.Mapping, __import__("collections.abc").abc.Mapping):
        if not isinstance(value, dict):
            return False
        if len(args) == 2:
            return all(matches(k, args[0]) and matches(v, args[1]) for k, v in value.items())
        return True
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def config_schema(cls: type) -> dict[str, inspect.Parameter]:
    """Keyword parameters of ``cls.__init__`` (excluding ``self`` and the ``run_context`` that
    :meth:`optkit.registry.Registry.create` passes itself), with resolved hints."""
    sig = inspect.signature(cls.__init__)  # type: ignore[misc]
    try:
        hints = typing.get_type_hints(cls.__init__)  # type: ignore[misc]
    except Exception:  # unresolved forward references: fall back to no type checking
        hints = {}
    schema: dict[str, inspect.Parameter] = {}
    for name, param in sig.parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name == "run_context":  # the caller's RunContext (optkit.context), not config
            continue
        schema[name] = param.replace(annotation=hints.get(name, param.annotation))
    return schema


def accepts_any_keyword(cls: type) -> bool:
    sig = inspect.signature(cls.__init__)  # type: ignore[misc]
    return any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())


def validate_config(cls: type, config: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Check ``config`` against ``cls``'s keyword-only ``__init__``.

    Args:
        cls: a plugin class.
        config: keys and TOML-decoded values (without ``name``/``label``).
        where: where the config came from, for messages (``"tasks/x.toml: optimizers[1]"``).

    Returns:
        The config as a plain dict.

    Raises:
        ConfigError: unknown key (with close names and the valid ones), missing required
            key, or a value of the wrong type (with the expected type).
    """
    schema = config_schema(cls)
    plugin = f"{getattr(cls, 'kind', 'plugin')} '{getattr(cls, 'name', cls.__name__)}'"
    if not accepts_any_keyword(cls):
        for key in config:
            if key not in schema:
                close = difflib.get_close_matches(key, list(schema), n=3)
                hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
                valid = ", ".join(sorted(schema)) or "(none)"
                raise ConfigError(
                    f"{where}: unknown key '{key}' for {plugin}.{hint} Valid keys: {valid}."
                )
    for key, param in schema.items():
        if key not in config:
            if param.default is inspect.Parameter.empty:
                raise ConfigError(f"{where}: {plugin} needs key '{key}' (none given).")
            continue
        if not matches(config[key], param.annotation):
            raise ConfigError(
                f"{where}: key '{key}' of {plugin} must be {describe_type(param.annotation)},"
                f" got {config[key]!r} ({type(config[key]).__name__})."
            )
    return dict(config)
