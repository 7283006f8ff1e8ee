"""The measured runs of a run directory, grouped by (objective, label, seed).

A row is *measured* when its ``phase`` is ``"measure"`` or absent (run directories written
before ``[tuning]`` existed); rows of tuning trials (``phase = "tuning"``) never enter a
comparison. Besides the rows, a comparison reads the task as written (``manifest.json``'s
``"task"``, for ``[target]``) and the tuning choices (``tuning.json``), both optional.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optkit.errors import ResultsError
from optkit.results import MANIFEST, load_rows

TUNING = "tuning.json"


def is_measured(row: dict[str, Any]) -> bool:
    """``True`` for rows of measured runs (``phase`` ``"measure"`` or no ``phase``)."""
    return row.get("phase", "measure") in ("measure", None)


@dataclass
class SeedRun:
    """One measured cell: its eval rows in order and its ``end`` row (``None`` while running).

    Attributes:
        evals: the ``event == "eval"`` rows, in the order written (iteration order).
        end: the ``event == "end"`` row, or ``None`` for an unfinished cell.
    """

    objective: str
    label: str
    seed: int
    evals: list[dict[str, Any]] = field(default_factory=list)
    end: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """Finished without divergence or failure."""
        return self.end is not None and self.end.get("status") == "ok"

    def final(self, metric: str) -> float | None:
        """The last evaluation's value of ``metric`` (``None``: never reported)."""
        for row in reversed(self.evals):
            value = row.get(metric)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        return None


@dataclass
class Measured:
    """Measured runs of one run directory.

    Attributes:
        runs: (objective, label) -> seed -> :class:`SeedRun`, both levels in the order the
            rows first name them (task order: the first label of an objective comes first).
        directions: objective -> {metric: "min" | "max"} from the ``end`` rows.
        primary: objective -> the objective's declared primary metric, where it has one.
        task: the task as written (``manifest.json``'s ``"task"``; ``{}`` without manifest).
        tuning: the content of ``tuning.json`` (``{}`` when the task was not tuned).
    """

    runs: dict[tuple[str, str], dict[int, SeedRun]]
    directions: dict[str, dict[str, str]]
    primary: dict[str, str]
    task: dict[str, Any]
    tuning: dict[str, Any]

    def objectives(self) -> list[str]:
        return list(dict.fromkeys(obj for obj, _ in self.runs))

    def labels(self, objective: str) -> list[str]:
        return [label for obj, label in self.runs if obj == objective]

    def maximize(self, objective: str, metric: str) -> bool:
        return self.directions.get(objective, {}).get(metric, "min") == "max"

    def eval_metrics(self, objective: str) -> set[str]:
        """Metric names with a value in some eval row of ``objective``."""
        return {
            k
            for (obj, _), seeds in self.runs.items()
            if obj == objective
            for run in seeds.values()
            for row in run.evals
            for k, v in row.items()
            if v is not None
        }

    def tuned(self, objective: str, label: str) -> dict[str, Any]:
        """``{plain key: chosen value}`` of ``label`` on ``objective`` (``{}``: untuned)."""
        entry = self.tuning.get("objectives", {}).get(objective, {}).get(label, {})
        chosen = entry.get("chosen", {}) if isinstance(entry, dict) else {}
        return dict(chosen) if isinstance(chosen, dict) else {}


def group(
    rows: list[dict[str, Any]],
    task: dict[str, Any] | None = None,
    tuning: dict[str, Any] | None = None,
) -> Measured:
    """Group the measured rows among ``rows`` (other phases are ignored)."""
    runs: dict[tuple[str, str], dict[int, SeedRun]] = {}
    directions: dict[str, dict[str, str]] = {}
    primary: dict[str, str] = {}
    for row in rows:
        if not is_measured(row) or "objective" not in row or "label" not in row:
            continue
        event = row.get("event")
        if event not in ("eval", "end"):
            continue
        objective, label, seed = row["objective"], row["label"], row.get("seed")
        if not isinstance(seed, int):
            continue
        per_seed = runs.setdefault((objective, label), {})
        run = per_seed.get(seed)
        if run is None:
            run = per_seed[seed] = SeedRun(objective, label, seed)
        if event == "eval":
            run.evals.append(row)
            continue
        run.end = row
        if isinstance(row.get("directions"), dict):
            directions[objective] = row["directions"]
        if row.get("primary_metric"):
            primary[objective] = row["primary_metric"]
    return Measured(runs, directions, primary, dict(task or {}), dict(tuning or {}))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: unreadable ({exc}); was it edited by hand?") from None
    if not isinstance(data, dict):
        raise ResultsError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def load_measured(run_dir: str | Path) -> Measured:
    """:func:`group` over a run directory's rows, with its manifest's task and tuning.json.

    Raises:
        ResultsError: no ``results.jsonl``, or an unreadable manifest / tuning.json.
    """
    run_dir = Path(run_dir)
    rows = load_rows(run_dir)
    if not rows:
        raise ResultsError(f"{run_dir}: results.jsonl holds no rows yet")
    manifest = _read_json(run_dir / MANIFEST) if (run_dir / MANIFEST).exists() else {}
    task = manifest.get("task")
    tuning = _read_json(run_dir / TUNING) if (run_dir / TUNING).exists() else {}
    return group(rows, task if isinstance(task, dict) else {}, tuning)
