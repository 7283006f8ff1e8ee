"""Search spaces of the black-box hyperoptimizers: declaration, validation, unit-cube encoding.

A search space is the ``space`` table of a hyperoptimizer in a task file: dotted keys that
address the inner pairing's config (``optimizer.lr``, ``objective.dim``,
``optimizer.base_config.lr``, ``optimizer.betas.0`` for an element of a list) mapped to a
parameter table::

    "optimizer.lr"     = { low = 1e-4, high = 1e-1, log = true }        # float (default type)
    "optimizer.betas.0" = { low = 0.5, high = 0.99 }                      # float, linear
    "objective.dim"    = { type = "int", low = 2, high = 8 }             # integer, inclusive
    "optimizer.rank"   = { type = "int", low = 1, high = 64, log = true }
    "optimizer.name"   = { choices = ["adam", "sgd"] }                    # categorical
    "objective.layers" = { type = "layers", num_layers = 12 }             # any non-empty subset
    "objective.layers" = { type = "layers", num_layers = 12, k = 4 }      # exactly k of L

Every parameter occupies ``width`` coordinates of the unit cube ``[0, 1]^D`` that BoTorch
works in (``D`` = sum of widths):

* ``float``: 1 coordinate, linear or logarithmic in ``[low, high]``;
* ``int``: 1 coordinate, cut into ``high - low + 1`` equal bins (log: bins equal in
  ``log`` over ``[low - 1/2, high + 1/2]``), so a uniform draw is uniform over the integers;
* ``categorical``: one-hot, ``len(choices)`` coordinates; decoding takes the arg-max;
* ``layers``: one coordinate per layer; without ``k`` a layer is selected when its coordinate
  is > 1/2 (at least one layer: the largest coordinate when none is); with ``k`` the ``k``
  largest coordinates are selected. The value is the sorted list of selected layer indices
  (``output = "mask"``: a list of ``num_layers`` booleans).

:meth:`SearchSpace.decode` maps a point of the cube to a config, :meth:`SearchSpace.encode`
maps a config to its *canonical* point (bin centres, exact one-hot / 0-1 masks), and
:meth:`SearchSpace.project` = ``encode(decode(.))`` rounds any point to a canonical one.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from optkit.context import RunContext
from optkit.errors import ConfigError

PREFIXES = ("objective.", "optimizer.")
TYPES = ("float", "int", "categorical", "layers")


def config_key(config: Mapping[str, Any]) -> str:
    """A canonical string of a config (tuples as lists, keys sorted), to compare configs."""
    return json.dumps(_plain(dict(config)), sort_keys=True)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Param:
    """One dimension group of a search space: a dotted ``key`` and ``width`` cube coordinates."""

    key: str
    type: ClassVar[str] = ""

    @property
    def width(self) -> int:
        return 1

    def decode(self, u: Sequence[float]) -> Any:
        """The config value of the ``width`` cube coordinates ``u`` (each in [0, 1])."""
        raise NotImplementedError

    def encode(self, value: Any) -> list[float]:
        """The canonical ``width`` coordinates of ``value``; ConfigError when outside."""
        raise NotImplementedError

    def project(self, u: torch.Tensor) -> torch.Tensor:
        """``encode(decode(u))`` on a tensor of shape ``(..., width)`` (same shape)."""
        raise NotImplementedError

    def _outside(self, value: Any, valid: str) -> ConfigError:
        return ConfigError(f"search space parameter '{self.key}': value {value!r} is {valid}")


@dataclass(frozen=True)
class FloatParam(Param):
    """A real number in ``[low, high]``, uniform in ``log`` when ``log`` (then ``low > 0``)."""

    low: float = 0.0
    high: float = 1.0
    log: bool = False
    type: ClassVar[str] = "float"

    def _t(self, x: float) -> float:
        return math.log(x) if self.log else x

    def decode(self, u: Sequence[float]) -> float:
        a, b = self._t(self.low), self._t(self.high)
        t = a + float(u[0]) * (b - a)
        value = math.exp(t) if self.log else t
        return min(max(value, self.low), self.high)

    def encode(self, value: Any) -> list[float]:
        if not _is_number(value) or not self.low <= value <= self.high:
            raise self._outside(value, f"not a number in [{self.low}, {self.high}]")
        a, b = self._t(self.low), self._t(self.high)
        return [min(max((self._t(float(value)) - a) / (b - a), 0.0), 1.0)]

    def project(self, u: torch.Tensor) -> torch.Tensor:
        return u.clamp(0.0, 1.0)


@dataclass(frozen=True)
class IntParam(Param):
    """An integer in ``[low, high]`` (inclusive); ``log`` spaces the bins logarithmically."""

    low: int = 0
    high: int = 1
    log: bool = False
    type: ClassVar[str] = "int"

    def _range(self) -> tuple[float, float]:
        if self.log:
            return math.log(self.low - 0.5), math.log(self.high + 0.5)
        return self.low - 0.5, self.high + 0.5

    def decode(self, u: Sequence[float]) -> int:
        a, b = self._range()
        t = a + float(u[0]) * (b - a)
        value = round(math.exp(t) if self.log else t)
        return int(min(max(value, self.low), self.high))

    def encode(self, value: Any) -> list[float]:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._outside(value, f"not an integer in [{self.low}, {self.high}]")
        if not self.low <= value <= self.high:
            raise self._outside(value, f"not an integer in [{self.low}, {self.high}]")
        a, b = self._range()
        t = math.log(value) if self.log else float(value)
        return [(t - a) / (b - a)]

    def project(self, u: torch.Tensor) -> torch.Tensor:
        a, b = self._range()
        t = a + u.clamp(0.0, 1.0) * (b - a)
        value = (t.exp() if self.log else t).round().clamp(self.low, self.high)
        return ((value.log() if self.log else value) - a) / (b - a)


@dataclass(frozen=True)
class CategoricalParam(Param):
    """One of ``choices`` (TOML scalars), one-hot encoded."""

    choices: tuple[Any, ...] = ()
    type: ClassVar[str] = "categorical"

    @property
    def width(self) -> int:
        return len(self.choices)

    def decode(self, u: Sequence[float]) -> Any:
        values = [float(x) for x in u]
        return self.choices[values.index(max(values))]

    def encode(self, value: Any) -> list[float]:
        for i, choice in enumerate(self.choices):
            if type(choice) is type(value) and choice == value:
                return [1.0 if j == i else 0.0 for j in range(self.width)]
        raise self._outside(value, f"not one of {list(self.choices)}")

    def project(self, u: torch.Tensor) -> torch.Tensor:
        index = u.argmax(dim=-1)
        return torch.nn.functional.one_hot(index, self.width).to(u.dtype)


@dataclass(frozen=True)
class LayersParam(Param):
    """A selection of layers ``0 .. num_layers - 1``: any non-empty subset, or exactly ``k``."""

    num_layers: int = 1
    k: int | None = None
    output: str = "indices"
    type: ClassVar[str] = "layers"

    @property
    def width(self) -> int:
        return self.num_layers

    def _mask(self, u: torch.Tensor) -> torch.Tensor:
        """Selection mask (0./1.) of shape ``(..., L)`` for coordinates ``u`` ``(..., L)``."""
        if self.k is not None:
            top = u.topk(self.k, dim=-1).indices
            return torch.zeros_like(u).scatter(-1, top, 1.0)
        mask = (u > 0.5).to(u.dtype)
        none = mask.sum(dim=-1, keepdim=True) == 0
        best = torch.nn.functional.one_hot(u.argmax(dim=-1), self.num_layers).to(u.dtype)
        return torch.where(none, best, mask)

    def decode(self, u: Sequence[float]) -> list[int] | list[bool]:
        mask = self._mask(torch.as_tensor([float(x) for x in u], dtype=torch.float64))
        if self.output == "mask":
            return [bool(m) for m in mask.tolist()]
        return [i for i, m in enumerate(mask.tolist()) if m > 0]

    def encode(self, value: Any) -> list[float]:
        valid = (
            f"not a list of {self.k if self.k else 'at least 1'} distinct layer indices in"
            f" [0, {self.num_layers - 1}]"
        )
        if self.output == "mask":
            valid = f"not a list of {self.num_layers} booleans with {self.k or '>= 1'} true"
            if (
                not isinstance(value, (list, tuple))
                or len(value) != self.num_layers
                or not all(isinstance(v, bool) for v in value)
            ):
                raise self._outside(value, valid)
            indices = [i for i, v in enumerate(value) if v]
        else:
            if not isinstance(value, (list, tuple)) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in value
            ):
                raise self._outside(value, valid)
            indices = list(value)
        if (
            len(set(indices)) != len(indices)
            or not all(0 <= i < self.num_layers for i in indices)
            or (self.k is not None and len(indices) != self.k)
            or not indices
        ):
            raise self._outside(value, valid)
        return [1.0 if i in indices else 0.0 for i in range(self.num_layers)]

    def project(self, u: torch.Tensor) -> torch.Tensor:
        return self._mask(u)


class SearchSpace:
    """An ordered set of :class:`Param` and its unit-cube encoding of dimension ``dims``."""

    def __init__(self, params: Sequence[Param]) -> None:
        self.params = list(params)
        self.slices: list[slice] = []
        start = 0
        for p in self.params:
            self.slices.append(slice(start, start + p.width))
            start += p.width
        self.dims = start

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.params]

    def decode(self, u: torch.Tensor) -> dict[str, Any]:
        """Config of one cube point ``u`` of shape ``(dims,)``."""
        values = u.tolist()
        return {p.key: p.decode(values[s]) for p, s in zip(self.params, self.slices, strict=True)}

    def encode(self, config: Mapping[str, Any]) -> torch.Tensor:
        """Canonical cube point, shape ``(dims,)`` float64; ConfigError for a foreign config."""
        missing = [k for k in self.keys if k not in config]
        if missing:
            raise ConfigError(
                f"config {dict(config)!r} lacks search space parameter(s) {', '.join(missing)}"
            )
        out: list[float] = []
        for p in self.params:
            out.extend(p.encode(config[p.key]))
        return torch.tensor(out, dtype=torch.float64)

    def project(self, u: torch.Tensor) -> torch.Tensor:
        """Round points of shape ``(..., dims)`` to canonical ones (``encode(decode(.))``)."""
        parts = [p.project(u[..., s]) for p, s in zip(self.params, self.slices, strict=True)]
        return torch.cat(parts, dim=-1)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` uniform cube points, shape ``(n, dims)`` float64 (decode: uniform configs)."""
        return torch.rand(n, self.dims, generator=generator, dtype=torch.float64)

    def of_type(self, cls: type[Param]) -> list[tuple[Param, slice]]:
        return [(p, s) for p, s in zip(self.params, self.slices, strict=True) if isinstance(p, cls)]

    def categorical_combinations(self) -> int:
        """Number of joint choices of all categorical parameters (1 when there are none)."""
        return math.prod(p.width for p, _ in self.of_type(CategoricalParam))


_KEYS: dict[str, set[str]] = {
    "float": {"type", "low", "high", "log"},
    "int": {"type", "low", "high", "log"},
    "categorical": {"type", "choices"},
    "layers": {"type", "num_layers", "k", "output"},
}


def parse_space(space: Mapping[str, Any], where: str) -> SearchSpace:
    """Validate a ``space`` table (see the module docstring) and build the :class:`SearchSpace`.

    Raises:
        ConfigError: naming ``where`` and the parameter: an empty space, a key that does not
            start with ``objective.`` / ``optimizer.``, overlapping keys, an unknown type or
            option, an empty or inverted range, ``log`` on a range that is not positive,
            fewer than 2 or duplicate choices, an invalid layer selection.
    """
    if not isinstance(space, Mapping) or not space:
        raise ConfigError(
            f"{where}: 'space' must be a non-empty table of dotted keys, e.g."
            ' space = { "optimizer.lr" = { low = 1e-4, high = 1e-1, log = true } }'
        )
    params = [_parse_param(str(key), spec, where) for key, spec in space.items()]
    keys = sorted(p.key for p in params)
    for a, b in itertools.pairwise(keys):
        if b.startswith(a + "."):
            raise ConfigError(
                f"{where}: search space keys '{a}' and '{b}' overlap (one sets a part of the"
                " other); keep one of them"
            )
    return SearchSpace(params)


def _parse_param(key: str, spec: Any, where: str) -> Param:
    at = f"{where}: search space parameter '{key}'"
    if not key.startswith(PREFIXES) or any(part == "" for part in key.split(".")):
        raise ConfigError(
            f"{at}: keys address the inner pairing's config and must look like"
            " 'objective.<key>' or 'optimizer.<key>' (nested: 'optimizer.base_config.lr',"
            " list element: 'optimizer.betas.0')"
        )
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"{at}: must be a table such as {{ low = 0.001, high = 0.1, log = true }},"
            f" {{ type = 'int', low = 1, high = 8 }} or {{ choices = ['a', 'b'] }};"
            f" got {spec!r}"
        )
    kind = spec.get("type")
    if kind is None:
        kind = (
            "categorical" if "choices" in spec else "layers" if "num_layers" in spec else ("float")
        )
    if kind not in TYPES:
        raise ConfigError(f"{at}: unknown type {kind!r}; valid types: {', '.join(TYPES)}")
    unknown = sorted(set(spec) - _KEYS[kind])
    if unknown:
        raise ConfigError(
            f"{at}: unknown option(s) {', '.join(unknown)} for type '{kind}';"
            f" valid: {', '.join(sorted(_KEYS[kind]))}"
        )
    if kind in ("float", "int"):
        return _parse_range(key, spec, kind, at)
    if kind == "categorical":
        return _parse_choices(key, spec, at)
    return _parse_layers(key, spec, at)


def _parse_range(key: str, spec: Mapping[str, Any], kind: str, at: str) -> Param:
    for bound in ("low", "high"):
        if bound not in spec:
            raise ConfigError(f"{at}: needs '{bound}' (type '{kind}' takes low, high, log)")
        value = spec[bound]
        ok = (
            isinstance(value, int) and not isinstance(value, bool)
            if kind == "int"
            else _is_number(value) and math.isfinite(value)
        )
        if not ok:
            what = "an integer" if kind == "int" else "a finite number"
            raise ConfigError(f"{at}: '{bound}' must be {what}, got {value!r}")
    low, high = spec["low"], spec["high"]
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{at}: 'log' must be true or false, got {log!r}")
    if low == high:
        raise ConfigError(f"{at}: empty range, low = high = {low}; need low < high")
    if low > high:
        raise ConfigError(f"{at}: inverted range, low = {low} > high = {high}; need low < high")
    if log and low <= 0:
        raise ConfigError(f"{at}: log = true needs a positive range (low > 0), got low = {low}")
    if kind == "int":
        return IntParam(key, int(low), int(high), log)
    return FloatParam(key, float(low), float(high), log)


def _parse_choices(key: str, spec: Mapping[str, Any], at: str) -> Param:
    choices = spec.get("choices")
    if not isinstance(choices, (list, tuple)) or len(choices) < 2:
        raise ConfigError(f"{at}: 'choices' must be a list of at least 2 values, got {choices!r}")
    for c in choices:
        if not isinstance(c, (str, int, float, bool)):
            raise ConfigError(f"{at}: choices must be strings, numbers or booleans, got {c!r}")
    seen = [config_key({"v": c}) for c in choices]
    if len(set(seen)) != len(seen):
        raise ConfigError(f"{at}: duplicate choices in {list(choices)}")
    return CategoricalParam(key, tuple(choices))


def _parse_layers(key: str, spec: Mapping[str, Any], at: str) -> Param:
    num_layers = spec.get("num_layers")
    if not isinstance(num_layers, int) or isinstance(num_layers, bool) or num_layers < 2:
        raise ConfigError(f"{at}: 'num_layers' must be an integer >= 2, got {num_layers!r}")
    k = spec.get("k")
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or not 1 <= k < num_layers):
        raise ConfigError(
            f"{at}: 'k' (layers to select) must be an integer in [1, {num_layers - 1}],"
            f" got {k!r}; leave it out to search over any non-empty subset"
        )
    output = spec.get("output", "indices")
    if output not in ("indices", "mask"):
        raise ConfigError(f"{at}: 'output' must be 'indices' or 'mask', got {output!r}")
    return LayersParam(key, num_layers, k, output)


def check_against_specs(
    space: SearchSpace,
    objective_spec: Mapping[str, Any],
    optimizer_spec: Mapping[str, Any],
    where: str,
    run_context: RunContext | None = None,
) -> None:
    """Check the space's keys against the inner pairing before any trial runs.

    The plugin classes come from the registry of ``run_context`` (the hyperoptimizer's
    ``HyperContext.run_context``); ``None`` means a default :class:`RunContext`.

    * the first segment after ``objective.`` / ``optimizer.`` must be a config key of the
      inner plugin (of every choice, when ``<kind>.name`` is itself searched);
    * a key that indexes a list element (``optimizer.betas.0``) needs that list in the inner
      spec: the override replaces one element of a list that must be given there.

    Raises:
        ConfigError: naming the key, the plugin and the valid keys.
    """
    from optkit.config import accepts_any_keyword, config_schema

    registry = (run_context if run_context is not None else RunContext()).plugins
    for kind, spec in (("objective", objective_spec), ("optimizer", optimizer_spec)):
        names = [str(spec.get("name", ""))]
        for p in space.params:
            if p.key == f"{kind}.name" and isinstance(p, CategoricalParam):
                names = [str(c) for c in p.choices]
        for name in names:
            cls = registry.get(kind, name)
            if accepts_any_keyword(cls):
                continue
            schema = config_schema(cls)
            for key in space.keys:
                head, first = key.split(".")[:2]
                if head == kind and first != "name" and first not in schema:
                    raise ConfigError(
                        f"{where}: search space key '{key}': {kind} '{name}' has no config key"
                        f" '{first}'; valid: {', '.join(sorted(schema))}"
                    )
    for key in space.keys:
        head, *parts = key.split(".")
        node: Any = objective_spec if head == "objective" else optimizer_spec
        for depth, part in enumerate(parts):
            if part.isdigit():
                if not isinstance(node, (list, tuple)) or int(part) >= len(node):
                    parent = ".".join([head, *parts[:depth]])
                    raise ConfigError(
                        f"{where}: search space key '{key}' sets element {part} of '{parent}',"
                        f" but the inner {head} table has no list there with that element;"
                        f" give the whole list in the {head} table (e.g. betas = [0.9, 0.999])"
                    )
                node = node[int(part)]
            else:
                node = node.get(part) if isinstance(node, Mapping) else None
