"""A run directory's ``manifest.json``: the task, versions, git revision, hardware, outcome."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optkit import environment
from optkit.tasks import Task

if TYPE_CHECKING:
    from optkit.runner.matrix import RunSummary


def manifest_for(
    task: Task, status: str, started: str, summary: RunSummary | None
) -> dict[str, Any]:
    source_dir = Path(task.source).parent if Path(task.source).exists() else Path.cwd()
    manifest: dict[str, Any] = {
        "task_name": task.name,
        "fingerprint": task.fingerprint,
        "source": task.source,
        "task": task.raw,
        "resolved": {
            "seeds": task.seeds,
            "budget": vars(task.budget),
            "device": task.device,
            "dtype": task.dtype,
            "score": task.score,
            "objectives": [vars(s) for s in task.objectives],
            "optimizers": [vars(s) for s in task.optimizers],
            "executor": vars(task.executor),
            "hyperoptimizers": [vars(h) for h in task.hyperoptimizers],
        },
        "versions": environment.package_versions(),
        "git_revision": environment.git_revision(source_dir),
        "hardware": environment.hardware(),
        "started": started,
        "status": status,
    }
    if summary is not None:
        manifest.update(
            finished=datetime.now(UTC).isoformat(timespec="seconds"),
            cells_run=summary.cells_run,
            cells_failed=summary.cells_failed,
            cells_skipped=[{"cell": c, "reason": r} for c, r in summary.cells_skipped],
            wall_s=summary.wall_s,
        )
    return manifest


def default_out(task: Task) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{task.name}-{stamp}"
