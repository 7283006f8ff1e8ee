"""Whole cells on Ray tasks: rows stream back as cells finish; an interrupted bench resumes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _ray_helpers import run_cell
from optkit_ray.cells import run_cells_on_ray

from optkit.errors import ConfigError

pytestmark = pytest.mark.ray


def _cells() -> list[dict[str, Any]]:
    specs = [
        ({"name": "sphere", "dim": 10, "noise": 0.3}, {"name": "adam", "lr": 0.1}),
        ({"name": "rosenbrock", "dim": 6}, {"name": "sgd", "lr": 1e-4}),
    ]
    return [
        {
            "id": f"{o['name']}-{p['name']}-s{seed}",
            "objective": o,
            "optimizer": p,
            "seed": seed,
            "iterations": 5,
        }
        for o, p in specs
        for seed in (0, 1)
    ]


def _append(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class Interrupted(Exception):
    pass


def test_rows_stream_back_and_an_interrupted_bench_resumes(
    ray_session: Any, tmp_path: Path
) -> None:
    cells = _cells()
    results = tmp_path / "results.jsonl"
    seen: list[str] = []

    def stop_after_first(rows: list[dict[str, Any]]) -> None:
        _append(results, rows)  # the runner appends each finished cell's rows at once
        seen.append(rows[0]["cell"])
        raise Interrupted  # the bench dies after the first finished cell

    with pytest.raises(Interrupted):
        run_cells_on_ray(cells, run_cell, stop_after_first, max_in_flight=2)
    assert len(seen) == 1 and len(_read(results)) == 5

    done = {row["cell"] for row in _read(results)}  # --resume: skip the cells already done
    todo = [c for c in cells if c["id"] not in done]
    delivered = run_cells_on_ray(todo, run_cell, lambda rows: _append(results, rows))
    assert delivered == 3
    rows = _read(results)
    by_cell: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_cell.setdefault(row["cell"], []).append(row)
    assert sorted(by_cell) == sorted(c["id"] for c in cells)
    for cell in cells:  # each cell exactly once, as if run here
        local = run_cell(cell)
        got = by_cell[cell["id"]]
        assert [r["iteration"] for r in got] == list(range(1, 6))
        assert [r["loss"] for r in got] == pytest.approx([r["loss"] for r in local], rel=1e-6)
        assert all(r["pid"] != local[0]["pid"] for r in got)  # they ran in Ray workers


def test_failed_cell_reported_or_raised(ray_session: Any) -> None:
    cells = _cells()[:2]
    cells[1] = {**cells[1], "fail": True}
    got: list[list[dict[str, Any]]] = []
    errors: list[tuple[str, BaseException]] = []
    delivered = run_cells_on_ray(
        cells, run_cell, got.append, on_error=lambda cell, exc: errors.append((cell["id"], exc))
    )
    assert delivered == 1 and got[0][0]["cell"] == cells[0]["id"]
    assert len(errors) == 1 and errors[0][0] == cells[1]["id"]
    assert isinstance(errors[0][1], ValueError) and "on purpose" in str(errors[0][1])
    with pytest.raises(ValueError, match="on purpose"):
        run_cells_on_ray(cells[1:], run_cell, got.append)


def test_bad_arguments(ray_session: Any) -> None:
    with pytest.raises(ConfigError, match="max_in_flight"):
        run_cells_on_ray(_cells(), run_cell, print, max_in_flight=0)
    with pytest.raises(ConfigError, match=r"127\.0\.0\.1:9"):
        run_cells_on_ray(_cells(), run_cell, print, address="127.0.0.1:9", connect_timeout_s=2)
