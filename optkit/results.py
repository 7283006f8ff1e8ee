"""A run directory: ``manifest.json``, ``results.jsonl`` (whole rows only) and ``results.csv``.

Write discipline, so that a killed run never leaves a half-written result:

* ``manifest.json`` and ``results.csv`` are written to a temporary file and renamed;
* each row of ``results.jsonl`` is one ``write`` of one complete line, flushed at once; a run
  killed mid-write can leave at most one partial last line, which :meth:`RunDirectory.rows`
  ignores and :meth:`RunDirectory.prepare_resume` removes;
* a cell is *complete* once its ``end`` row is written; ``--resume`` drops the rows of
  incomplete cells (keeping finished hyperoptimizer trials, which resume from them) and runs
  only the missing cells;
* one process writes a run directory at a time: :meth:`RunDirectory.create` takes its lock
  (:mod:`optkit.runlock`) and refuses a second writer, naming it;
* an ``OSError`` while writing (no permission, a full disk) is an
  :class:`~optkit.errors.EnvironmentProblem` naming the path, not a traceback.
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

from optkit.envproblems import writing
from optkit.errors import ResultsError
from optkit.runlock import LOCK_FILE, RunLock, is_lock_file
from optkit.wording import CLI, Words

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
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # e.g. a full disk: leave the old file, not a partial one
        raise


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

    def __init__(self, path: Path, words: Words = CLI) -> None:
        self.path = path
        self.words = words
        self.lock: RunLock | None = None

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    @property
    def rows_path(self) -> Path:
        return self.path / ROWS

    @classmethod
    def create(
        cls,
        path: str | Path,
        task_name: str,
        fingerprint: str,
        resume: bool,
        words: Words = CLI,
    ) -> RunDirectory:
        """Open ``path`` for a task and take its lock; refuse a directory that holds something
        else, or that another process is writing. Call :meth:`close` when done.

        Every refusal comes before anything is written (the directory is created only once
        the checks pass).

        Raises:
            ResultsError: ``path`` holds another task's results, or this task's results without
                ``resume``, or is a non-empty directory that is not a run directory, or another
                process holds its lock (named by pid and host).
            EnvironmentProblem: ``path`` cannot be created or written.
        """
        path = Path(path)
        run = cls(path, words)
        if not (path / LOCK_FILE).is_file():  # a directory another process writes is named so
            run.check(task_name, fingerprint, resume)
        with writing(path, words):
            path.mkdir(parents=True, exist_ok=True)
        run.lock = RunLock(path, words).acquire()
        try:
            run.check(task_name, fingerprint, resume)  # again: another writer may just have left
        except BaseException:
            run.close()
            raise
        return run

    def check(self, task_name: str, fingerprint: str, resume: bool) -> None:
        """Whether this task may write here (writes nothing); see :meth:`create`."""
        path, out = self.path, self.words.out_is(self.path)
        if path.exists() and not path.is_dir():
            raise ResultsError(f"{out}: exists and is not a directory")
        if self.manifest_path.exists():
            manifest = self.manifest()
            if manifest.get("fingerprint") != fingerprint:
                raise ResultsError(
                    f"{out} holds the results of task '{manifest.get('task_name')}'"
                    f" (fingerprint {manifest.get('fingerprint')}), not of this task"
                    f" '{task_name}' ({fingerprint}). Choose another {self.words.out} directory."
                )
            if not resume:
                raise ResultsError(
                    f"{out} already holds results of task '{task_name}'. Pass"
                    f" {self.words.resume} to finish its missing cells, or choose another"
                    f" {self.words.out} directory."
                )
        elif path.is_dir() and any(not is_lock_file(p.name) for p in path.iterdir()):
            raise ResultsError(
                f"{out} is a non-empty directory without {MANIFEST}: not an optkit run"
                " directory. Choose an empty or new directory."
            )

    def close(self) -> None:
        """Release the lock taken by :meth:`create` (idempotent)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def manifest(self) -> dict[str, Any]:
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ResultsError(f"{self.manifest_path}: unreadable manifest ({exc})") from None

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        with writing(self.manifest_path, self.words):
            atomic_write_text(
                self.manifest_path, json.dumps(manifest, indent=2, default=_json_default) + "\n"
            )

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        """Append rows; each line goes out in a single write."""
        with writing(self.rows_path, self.words), open(self.rows_path, "a", encoding="utf-8") as f:
            for row in rows:
                f.write(encode_row(row))
                f.flush()

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
        with writing(self.rows_path, self.words):
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
        with writing(target, self.words):
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
