"""Dotted-key overrides of a component spec (``optimizer.lr``, ``optimizer.betas.0``): how a
trial or a tuned cell changes the task's configuration."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from optkit.errors import ConfigError


def apply_dotted(spec: dict[str, Any], kind: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Apply overrides such as ``{"optimizer.lr": 0.1, "optimizer.betas.0": 0.8}`` to ``spec``
    for keys that start with ``kind.``; list indices are integers."""
    spec = copy.deepcopy(spec)
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if head != kind:
            continue
        if not rest:
            raise ConfigError(f"override '{key}': expected '{kind}.<key>'")
        parts = rest.split(".")
        node: Any = spec
        for part in parts[:-1]:
            if isinstance(node, list):
                node = node[int(part)]
            else:
                node = node.setdefault(part, {})
        if isinstance(node, list):
            node[int(parts[-1])] = value
        else:
            node[parts[-1]] = value
    return spec
