"""Task files: load, validate, apply overrides, expand into a matrix of cells.

A task file is TOML::

    name = "rosenbrock-adam"
    seeds = [0, 1, 2]
    budget = { iterations = 40, eval_every = 1 }
    objective = { name = "rosenbrock", dim = 1000 }      # or objectives = [ {...}, ... ]
    optimizers = [ { name = "adam", lr = 0.01 },          # or optimizer = { ... }
                   { name = "adam", lr = 0.03, label = "adam-lr0.03" } ]
    executor = { name = "vmap" }                          # optional (default: serial)
    hyperoptimizer = { name = "random_search", ... }      # optional; or hyperoptimizers = [...]
    device = "cpu"                                        # optional: cpu | cuda | auto
    dtype = "float32"                                     # optional: float32 | float64 | bfloat16

Unknown keys are errors. Component tables are validated against the plugin's signature when
the task is *checked* (:func:`optkit.checking.check_task`, also importable from here), before
anything runs. This module only parses (:func:`load_task`, :func:`validate_task`): it needs no
plugin and does not import the registry, so a task file can be read, overridden and
fingerprinted anywhere.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from optkit.errors import ConfigError

if TYPE_CHECKING:
    from optkit.checking import CheckReport, check_task
    from optkit.tuning_spec import TargetSpec, TuningSpec

TOP_LEVEL_KEYS = {
    "name": "task name (string, required)",
    "description": "free text",
    "seeds": "list of integer seeds (default [0])",
    "budget": "table: iterations (required), eval_every, time_s, target",
    "objective": "table with 'name' and the objective's config",
    "objectives": "list of objective tables",
    "optimizer": "table with 'name' and the optimizer's config",
    "optimizers": "list of optimizer tables",
    "executor": "table with 'name' (serial, vmap, ...)",
    "hyperoptimizer": "table with 'name' and the hyperoptimizer's config",
    "hyperoptimizers": "list of hyperoptimizer tables (a matrix dimension, like optimizers)",
    "score": "metric a hyperoptimizer minimizes (default 'loss'; max-metrics are negated)",
    "device": "cpu | cuda | auto",
    "dtype": "float32 | float64 | bfloat16",
    "tuning": "table: tune every optimizer the same way first (see optkit.tuning_spec)",
    "target": "table: reference label or value, and the metric every method must reach",
}
BUDGET_KEYS = {
    "iterations": "number of optimizer iterations per cell (integer > 0)",
    "eval_every": "evaluate and write a row every k iterations (integer > 0, default 1)",
    "time_s": "stop a cell after this many seconds of optimization (number > 0)",
    "target": "stop a cell once the score metric reaches this value",
}
DTYPES = ("float32", "float64", "bfloat16")
DEVICES = ("cpu", "cuda", "auto")


@dataclass(frozen=True)
class ComponentSpec:
    """One plugin instance as the task file asks for it.

    Attributes:
        kind: objective | optimizer | executor | hyperoptimizer.
        name: registry name.
        label: display name in results (``label`` key, default ``name``).
        config: keyword config (without ``name`` and ``label``).
        where: location in the task file for error messages (``"tasks/x.toml: optimizers[1]"``).
    """

    kind: str
    name: str
    label: str
    config: dict[str, Any]
    where: str

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, **copy.deepcopy(self.config)}


@dataclass(frozen=True)
class Budget:
    iterations: int
    eval_every: int = 1
    time_s: float | None = None
    target: float | None = None


@dataclass(frozen=True)
class Cell:
    """One run of the matrix: an objective, an optimizer (and a hyperoptimizer) and a seed."""

    objective: ComponentSpec
    optimizer: ComponentSpec
    seed: int
    hyperoptimizer: ComponentSpec | None = None
    phase: ClassVar[str] = "measure"
    """``"measure"``; a tuning search is a :class:`optkit.tuning.TuningCell` (``"tuning"``)."""

    @property
    def label(self) -> str:
        """The method's label in results: the optimizer's, prefixed by the hyperoptimizer's."""
        if self.hyperoptimizer is None:
            return self.optimizer.label
        return f"{self.hyperoptimizer.label}:{self.optimizer.label}"

    @property
    def key(self) -> str:
        return f"{self.objective.label}|{self.label}|{self.seed}"


@dataclass(frozen=True)
class Task:
    """A validated task file."""

    name: str
    source: str
    seeds: list[int]
    budget: Budget
    objectives: list[ComponentSpec]
    optimizers: list[ComponentSpec]
    executor: ComponentSpec
    hyperoptimizers: list[ComponentSpec]
    device: str
    dtype: str
    score: str
    raw: dict[str, Any] = field(repr=False)
    tuning: TuningSpec | None = None
    target: TargetSpec | None = None

    def cells(self) -> list[Cell]:
        """The matrix, objective-major, then hyperoptimizer, optimizer, seed."""
        hypers: list[ComponentSpec | None] = list(self.hyperoptimizers) or [None]
        return [
            Cell(o, p, s, h)
            for o in self.objectives
            for h in hypers
            for p in self.optimizers
            for s in self.seeds
        ]

    @property
    def fingerprint(self) -> str:
        """Hash of the task's content: a results directory belongs to exactly one task."""
        blob = json.dumps(self.raw, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _fail(source: str, message: str) -> ConfigError:
    return ConfigError(f"{source}: {message}")


PLAIN_NAME = re.compile(r"[A-Za-z0-9._-]+")


def check_name(value: str, what: str, where: str) -> None:
    """Task names and method labels name directories and files: letters, digits, ``.``,
    ``_`` and ``-`` only, and no ``..`` (so no ``/``, no absolute path, no way out of ``runs/``).

    Raises:
        ConfigError: naming ``where``, ``what`` and the value.
    """
    if PLAIN_NAME.fullmatch(value) and ".." not in value and value != ".":
        return
    raise ConfigError(
        f"{where}: {what} {value!r} is not a plain name: use letters, digits, '.', '_' and '-'"
        " only (no '/', no '..', not an absolute path), since it names the run directory"
        " (runs/NAME) and result files."
    )


def parse_override(text: str, source: str = "--set") -> tuple[list[str], Any]:
    """``"optimizers.0.lr=0.1"`` -> (``["optimizers", "0", "lr"]``, ``0.1``).

    The value is read as a TOML value (numbers, booleans, strings in quotes, arrays,
    inline tables); anything that is not valid TOML is taken as a plain string.
    """
    if "=" not in text:
        raise ConfigError(f"{source} '{text}': expected KEY=VALUE, e.g. budget.iterations=10")
    key, value_text = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"{source} '{text}': empty key")
    try:
        value = tomllib.loads(f"v = {value_text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = value_text.strip()
    return key.split("."), value


def apply_override(raw: dict[str, Any], path: Sequence[str], value: Any, source: str) -> None:
    """Set ``raw[path...] = value``; list indices are integers in the path."""
    node: Any = raw
    for i, part in enumerate(path[:-1]):
        node = _child(node, part, ".".join(path[: i + 1]), source, create=True)
    last = path[-1]
    if isinstance(node, list):
        index = _index(node, last, ".".join(path), source)
        node[index] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"{source} '{'.'.join(path)}': '{path[-2]}' is not a table or list")


def _index(node: list[Any], part: str, where: str, source: str) -> int:
    try:
        index = int(part)
        node[index]
    except (ValueError, IndexError):
        raise ConfigError(
            f"{source} '{where}': '{part}' is not an index of a list of {len(node)}"
        ) from None
    return index


def _child(node: Any, part: str, where: str, source: str, create: bool) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, where, source)]
    if isinstance(node, dict):
        if part not in node:
            if not create:
                raise ConfigError(f"{source} '{where}': no such key")
            node[part] = {}
        return node[part]
    raise ConfigError(f"{source} '{where}': cannot descend into a {type(node).__name__}")


def read_task_file(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; any read or syntax problem is a :class:`ConfigError` naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: task file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read task file ({exc})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def load_task(
    source: str | Path | Mapping[str, Any],
    overrides: Iterable[str] = (),
    *,
    override_flag: str = "overrides",
) -> Task:
    """Load and validate a task from a TOML path or a dict, applying ``KEY=VALUE`` overrides.

    ``override_flag`` is how errors name the overrides (the CLI passes ``"--set"``).

    Raises:
        ConfigError: with the file, the key and what would be valid.
    """
    if isinstance(source, Mapping):
        raw = copy.deepcopy(dict(source))
        where = f"task '{raw.get('name', '?')}'"
    else:
        raw = read_task_file(source)
        where = str(source)
    for text in overrides:
        path, value = parse_override(text, f"{where}: {override_flag}")
        apply_override(raw, path, value, f"{where}: {override_flag}")
    return validate_task(raw, where)


def validate_task(raw: dict[str, Any], source: str) -> Task:
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            close = difflib.get_close_matches(key, list(TOP_LEVEL_KEYS), n=2)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise _fail(
                source,
                f"unknown key '{key}'.{hint} Valid top-level keys: "
                + ", ".join(sorted(TOP_LEVEL_KEYS))
                + ".",
            )
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _fail(source, "key 'name' is required and must be a non-empty string")
    check_name(name, "task 'name'", source)
    seeds = raw.get("seeds", [0])
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
    ):
        raise _fail(source, f"'seeds' must be a non-empty list of integers >= 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise _fail(source, f"'seeds' has duplicates: {seeds!r}")
    budget = _budget(raw.get("budget"), source)
    objectives = _components(raw, "objective", "objectives", source, required=True)
    optimizers = _components(raw, "optimizer", "optimizers", source, required=True)
    executor_raw = raw.get("executor", {"name": "serial"})
    executor = _component(executor_raw, "executor", f"{source}: executor")
    hypers: list[ComponentSpec] = []
    if "hyperoptimizer" in raw or "hyperoptimizers" in raw:
        hypers = _components(raw, "hyperoptimizer", "hyperoptimizers", source, required=True)
    device = raw.get("device", "cpu")
    if device not in DEVICES and not (isinstance(device, str) and device.startswith("cuda:")):
        raise _fail(
            source, f"'device' must be one of {', '.join(DEVICES)} or 'cuda:N', got {device!r}"
        )
    dtype = raw.get("dtype", "float32")
    if dtype not in DTYPES:
        raise _fail(source, f"'dtype' must be one of {', '.join(DTYPES)}, got {dtype!r}")
    score = raw.get("score", "loss")
    if not isinstance(score, str):
        raise _fail(source, f"'score' must be a metric name (string), got {score!r}")
    if "description" in raw and not isinstance(raw["description"], str):
        raise _fail(source, "'description' must be a string")
    from optkit.tuning_spec import parse_target, parse_tuning

    tuning = parse_tuning(raw["tuning"], seeds, budget, source) if "tuning" in raw else None
    labels = [o.label for o in optimizers]
    target = parse_target(raw["target"], labels, source) if "target" in raw else None
    return Task(
        name=name,
        source=source,
        seeds=list(seeds),
        budget=budget,
        objectives=objectives,
        optimizers=optimizers,
        executor=executor,
        hyperoptimizers=hypers,
        device=device,
        dtype=dtype,
        score=score,
        raw=raw,
        tuning=tuning,
        target=target,
    )


def _budget(value: Any, source: str) -> Budget:
    if not isinstance(value, dict):
        raise _fail(source, "key 'budget' is required: a table such as { iterations = 40 }")
    for key in value:
        if key not in BUDGET_KEYS:
            valid = "; ".join(f"{k}: {v}" for k, v in BUDGET_KEYS.items())
            raise _fail(source, f"unknown key 'budget.{key}'. Valid: {valid}.")
    iterations = value.get("iterations")
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations <= 0:
        raise _fail(source, f"'budget.iterations' must be an integer > 0, got {iterations!r}")
    eval_every = value.get("eval_every", 1)
    if not isinstance(eval_every, int) or isinstance(eval_every, bool) or eval_every <= 0:
        raise _fail(source, f"'budget.eval_every' must be an integer > 0, got {eval_every!r}")
    time_s = value.get("time_s")
    if time_s is not None and (not isinstance(time_s, (int, float)) or time_s <= 0):
        raise _fail(source, f"'budget.time_s' must be a number > 0, got {time_s!r}")
    target = value.get("target")
    if target is not None and not isinstance(target, (int, float)):
        raise _fail(source, f"'budget.target' must be a number, got {target!r}")
    return Budget(iterations, eval_every, time_s, target)


def _components(
    raw: dict[str, Any], single: str, plural: str, source: str, required: bool
) -> list[ComponentSpec]:
    if single in raw and plural in raw:
        raise _fail(source, f"give either '{single}' (one table) or '{plural}' (a list), not both")
    if single in raw:
        items, names = [raw[single]], [single]
    elif plural in raw:
        value = raw[plural]
        if not isinstance(value, list) or not value:
            raise _fail(source, f"'{plural}' must be a non-empty list of tables")
        items, names = value, [f"{plural}[{i}]" for i in range(len(value))]
    else:
        raise _fail(source, f"key '{single}' (or '{plural}') is required")
    specs = [
        _component(item, single, f"{source}: {n}") for item, n in zip(items, names, strict=True)
    ]
    seen: dict[str, str] = {}
    for spec in specs:
        if spec.label in seen:
            raise ConfigError(
                f"{spec.where} and {seen[spec.label]} both have label '{spec.label}':"
                " give one of them a distinct 'label'"
            )
        seen[spec.label] = spec.where
    return specs


def _component(value: Any, kind: str, where: str) -> ComponentSpec:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a table with a 'name', got {value!r}")
    name = value.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: key 'name' (the {kind}'s registered name) is required")
    label = value.get("label", name)
    if not isinstance(label, str) or not label or "|" in label:
        raise ConfigError(f"{where}: 'label' must be a non-empty string without '|'")
    if kind in ("optimizer", "hyperoptimizer"):  # method labels may name result files
        check_name(label, "'label'" if "label" in value else "name (the default label)", where)
    config = {k: v for k, v in value.items() if k not in ("name", "label")}
    return ComponentSpec(kind, name, label, config, where)


_CHECKING = ("CheckReport", "check_score", "check_task", "missing_requirements", "probe_optimizer")


def __getattr__(name: str) -> Any:
    """Checking a task loads plugins, so it lives in :mod:`optkit.checking`; its names stay
    importable from here (lazily: importing this module loads no plugin)."""
    if name in _CHECKING:
        from optkit import checking

        return getattr(checking, name)
    raise AttributeError(f"module 'optkit.tasks' has no attribute {name!r}")


__all__ = [
    "Budget",
    "Cell",
    "CheckReport",
    "ComponentSpec",
    "Task",
    "check_task",
    "load_task",
    "parse_override",
]
