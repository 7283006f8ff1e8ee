"""A run directory: ``manifest.json``, ``results.jsonl`` (whole rows only) and ``results.csv``.

Write discipline, so that a killed run never leaves a half-written result:

* ``manifest.json`` and ``results.csv`` are written to a temporary file and renamed;
* each row of ``results.jsonl`` is one ``write`` of one complete line, flushed at once; a run
  killed mid-write can leave at most one partial last line, which :meth:`RunDirectory.rows`
  ignores and :meth:`RunDirectory.prepare_resume` removes;
* a cell is *complete* once its ``end`` row is written; ``--resume`` drops the rows of
  incomplete cells (keeping finished hyperoptimizer trials, which resume from them) and runs
  only the missing cells.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from optkit.errors import ResultsError

MANIFEST = "manifest.json"
ROWS = "results.jsonl"
CSV = "results.csv"

FIRST_COLUMNS = [
    "task",
    "cell",
    "objective",
    "optimizer",
    "label",
    "seed",
    "event",
    "iteration",
    "sequential_steps",
    "grad_evals",
    "wall_s",
    "loss",
    "minibatch_loss",
]


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def encode_row(row: dict[str, Any]) -> str:
    """One JSON line; NaN/inf become ``null`` so every line is strict JSON."""
    clean = {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()
    }
    return json.dumps(clean, default=_json_default, allow_nan=False) + "\n"


class RunDirectory:
    """The files of one task's run. Construct with :meth:`create`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    @property
    def rows_path(self) -> Path:
        return self.path / ROWS

    @classmethod
    def create(
        cls, path: str | Path, task_name: str, fingerprint: str, resume: bool
    ) -> RunDirectory:
        """Open ``path`` for a task, refusing a directory that holds something else.

        Raises:
            ResultsError: ``path`` holds another task's results, or this task's results without
                ``resume``, or is a non-empty directory that is not a run directory.
        """
        path = Path(path)
        run = cls(path)
        if path.exists() and not path.is_dir():
            raise ResultsError(f"--out {path}: exists and is not a directory")
        if run.manifest_path.exists():
            manifest = run.manifest()
            if manifest.get("fingerprint") != fingerprint:
                raise ResultsError(
                    f"--out {path} holds the results of task '{manifest.get('task_name')}'"
                    f" (fingerprint {manifest.get('fingerprint')}), not of this task"
                    f" '{task_name}' ({fingerprint}). Choose another --out directory."
                )
            if not resume:
                raise ResultsError(
                    f"--out {path} already holds results of task '{task_name}'. Pass --resume"
                    " to finish its missing cells, or choose another --out directory."
                )
        elif path.exists() and any(path.iterdir()):
            raise ResultsError(
                f"--out {path} is a non-empty directory without {MANIFEST}: not an optkit run"
                " directory. Choose an empty or new directory."
            )
        path.mkdir(parents=True, exist_ok=True)
        return run

    def manifest(self) -> dict[str, Any]:
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ResultsError(f"{self.manifest_path}: unreadable manifest ({exc})") from None

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write_text(
            self.manifest_path, json.dumps(manifest, indent=2, default=_json_default) + "\n"
        )

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        """Append rows; each line goes out in a single write."""
        with open(self.rows_path, "a", encoding="utf-8") as handle:
            for row in rows:
                handle.write(encode_row(row))
                handle.flush()

    def rows(self) -> list[dict[str, Any]]:
        """All whole rows (a partial last line from a killed run is ignored)."""
        if not self.rows_path.exists():
            return []
        rows = []
        with open(self.rows_path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.endswith("\n"):
                    break  # partial last line of a killed run
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise ResultsError(
                        f"{self.rows_path}:{number}: not a JSON row; the file was edited by hand?"
                    ) from None
        return rows

    def completed_cells(self) -> set[str]:
        return {r["cell"] for r in self.rows() if r.get("event") == "end"}

    def prepare_resume(self) -> list[dict[str, Any]]:
        """Keep the rows of complete cells and finished trials; return the rows kept."""
        rows = self.rows()
        done = {r["cell"] for r in rows if r.get("event") == "end"}
        kept = [r for r in rows if r.get("cell") in done or r.get("event") == "trial"]
        atomic_write_text(self.rows_path, "".join(encode_row(r) for r in kept))
        return kept

    def export_csv(self) -> Path:
        """Write ``results.csv`` (all rows, union of columns, stable order)."""
        rows = self.rows()
        columns = list(FIRST_COLUMNS)
        for row in rows:
            for key in row:
                if key not in columns:
                    columns.append(key)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in row.items()}
            )
        target = self.path / CSV
        atomic_write_text(target, buffer.getvalue())
        return target


def load_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a run directory (or of a ``results.jsonl`` path)."""
    path = Path(path)
    directory = path.parent if path.name == ROWS else path
    run = RunDirectory(directory)
    if not run.rows_path.exists():
        raise ResultsError(f"{directory}: no {ROWS} here; is this an optkit run directory?")
    return run.rows()
