"""Every task file shipped under tasks/ loads and passes the pre-run checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from optkit.tasks import check_task, load_task

TASKS = sorted((Path(__file__).resolve().parents[2] / "tasks").glob("*.toml"))


def test_the_shipped_tasks_are_found() -> None:
    assert len(TASKS) >= 30


@pytest.mark.parametrize("path", TASKS, ids=lambda p: p.name)
def test_task_file_is_valid(path: Path) -> None:
    task = load_task(path)
    report = check_task(task)
    assert report.runnable, f"{path.name}: nothing runnable"
    assert not report.skipped, f"{path.name}: skipped cells {report.skipped}"
