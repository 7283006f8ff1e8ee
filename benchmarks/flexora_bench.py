"""Flexora vs. the LoRA baselines on SmolLM2-135M: (task, seed, method) jobs on K workers.

Every job is one ``optkit.run`` of ``tasks/flexora-<task>[-baselines].toml`` at the
benchmark's scale (:class:`flexora_jobs.Scale`), one seed and one method; Flexora's job also
fine-tunes as many random layers (the ``random`` row). ``--workers K`` worker processes
(flexora_worker.py, one torch thread each) share one GPU: a launch-bound 135M-parameter
fine-tune leaves the GPU mostly idle, so K processes give several times the throughput of one.
The scheduler here hands out jobs in order (``--order``: main suite before the ablation, seed by
seed, longest first), keeps the estimated GPU memory of the running jobs under
``--gpu-memory-mb``, starts no job after ``--time-limit`` seconds nor one that would not end
before ``--deadline`` (estimated from the cost model, recalibrated on the finished jobs), and
kills what still runs at the deadline (killed jobs leave no row). Each worker appends whole
rows to ``rows/worker-<i>.jsonl``; they are merged into ``flexora_results.jsonl`` at the end,
then the report (tables, goal checks, ablation, figures) is written next to it.

    python benchmarks/flexora_bench.py --plan                       # job list, time estimate
    python benchmarks/flexora_bench.py --out runs/fb --suite main --deadline 520
    python benchmarks/flexora_bench.py --table runs/fb/flexora_results.jsonl --report-dir runs/fb
    # CPU smoke test of the whole pipeline (a few minutes):
    python benchmarks/flexora_bench.py --tiny --device cpu --workers 2 --out /tmp/fb --suite all
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from flexora_jobs import (
    METHODS,
    MODES,
    ROOT,
    SECONDS_PER_UNIT,
    TASKS,
    Job,
    Scale,
    build_jobs,
    rows_of,
    simulate,
)

WORKER = Path(__file__).resolve().parent / "flexora_worker.py"
TINY = {  # the CPU smoke test: the real model, a few examples and steps
    "train_size": 8,
    "val_size": 4,
    "test_size": 4,
    "batch_size": 2,
    "eval_batch_size": 4,
    "max_length": 40,
    "epochs": 1.0,
    "search_fraction": 0.25,
}
RELEASED = {"epochs": 3.0, "search_fraction": 1 / 3, "gate_lr": 0.01}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "flexora-bench")
    p.add_argument("--jobs-dir", type=Path, default=None, help="optkit run folders (out/jobs)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--workers", type=int, default=None, help="default: 12 on cuda, 2 on cpu")
    p.add_argument("--suite", choices=("main", "ablation", "all"), default="main")
    p.add_argument("--tasks", nargs="*", default=list(TASKS), choices=TASKS)
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    p.add_argument("--methods", nargs="*", default=[m for m in METHODS if m != "random"])
    p.add_argument("--order", choices=("seed", "lpt"), default="seed")
    s = Scale()
    p.add_argument("--train-size", type=int, default=s.train_size)
    p.add_argument("--val-size", type=int, default=s.val_size)
    p.add_argument("--test-size", type=int, default=s.test_size)
    p.add_argument("--batch-size", type=int, default=s.batch_size)
    p.add_argument("--eval-batch-size", type=int, default=s.eval_batch_size)
    p.add_argument("--max-length", type=int, default=s.max_length)
    p.add_argument("--epochs", type=float, default=s.epochs, help="fine-tune epochs")
    p.add_argument(
        "--search-fraction",
        type=float,
        default=s.search_fraction,
        help="Flexora search steps / fine-tune steps (a search step costs ~2.2-2.8 fine-tune"
        " steps, so 1/12 keeps the search under 25%% of the fine-tune)",
    )
    p.add_argument("--gate-lr", type=float, default=s.gate_lr)
    p.add_argument("--lr", type=float, default=s.lr)
    p.add_argument("--full-lr", type=float, default=s.full_lr)
    p.add_argument("--attn", default=s.attn)
    p.add_argument(
        "--released",
        action="store_true",
        help="the released schedule: 3 fine-tune epochs, a one-epoch search, gate lr 0.01",
    )
    p.add_argument("--tiny", action="store_true", help="CPU smoke-test sizes (TINY)")
    p.add_argument("--ablation-tasks", nargs="*", default=["winowhy", "strategyqa"])
    p.add_argument("--ablation-seeds", type=int, nargs="*", default=[0, 1, 2])
    p.add_argument("--ablation-modes", nargs="*", default=list(MODES), choices=MODES)
    p.add_argument(
        "--ablation-budgets",
        type=float,
        nargs="*",
        default=[1 / 12, 1 / 2],
        help="search budgets as fractions of the fine-tune steps",
    )
    p.add_argument("--time-limit", type=float, default=float("inf"), help="no job starts after")
    p.add_argument("--deadline", type=float, default=float("inf"), help="running jobs killed")
    p.add_argument("--gpu-memory-mb", type=float, default=120_000)
    p.add_argument(
        "--speedup",
        type=float,
        default=6.0,
        help="assumed throughput of K concurrent workers over one process (planning only)",
    )
    p.add_argument("--seconds-per-unit", type=float, default=SECONDS_PER_UNIT)
    p.add_argument("--plan", action="store_true", help="print the jobs and the estimate, exit")
    p.add_argument("--table", type=Path, nargs="*", default=None, help="report of JSONL files")
    p.add_argument("--report-dir", type=Path, default=None, help="where --table writes files")
    p.add_argument(
        "--rows-from-jobs",
        type=Path,
        default=None,
        help="rebuild --out/flexora_results.jsonl from a jobs folder (per-job results.jsonl)"
        " for the jobs the other options select, when the merged rows were lost",
    )
    args = p.parse_args(argv)
    if args.workers is None:
        args.workers = 2 if args.device == "cpu" else 12
    return args


def make_scale(args: argparse.Namespace) -> Scale:
    values = {f.name: getattr(args, f.name) for f in fields(Scale)}
    if args.tiny:
        values.update(TINY)
    if args.released:
        values.update(RELEASED)
    return Scale(**values)


def seconds_per_unit(args: argparse.Namespace) -> float:
    """Wall seconds per cost unit of one worker among ``args.workers`` (planning prior)."""
    k = args.workers
    return args.seconds_per_unit * k / min(k, args.speedup)


def plan_text(jobs: list[Job], scale: Scale, args: argparse.Namespace) -> str:
    spu = seconds_per_unit(args)
    lines = [
        f"scale: {asdict(scale)}",
        f"fine-tune steps {scale.finetune_steps}, Flexora search steps {scale.search_steps()}"
        f" (fraction {scale.search_fraction:.4f}), LoRA-drop short run {scale.drop_steps}",
        f"{'job':58s} {'units':>7s} {'est s':>7s} {'mem MB':>7s}",
    ]
    for job in jobs:
        lines.append(f"{job.id:58s} {job.cost:7.0f} {job.cost * spu:7.1f} {job.memory_mb:7.0f}")
    for suite in ("main", "ablation"):
        part = [j for j in jobs if j.suite == suite]
        if not part:
            continue
        units = sum(j.cost for j in part)
        lines.append(
            f"{suite}: {len(part)} jobs, {units:,.0f} units ="
            f" {units * args.seconds_per_unit:,.0f} s"
            f" in one process at {args.seconds_per_unit} s/unit; with {args.workers} workers at an"
            f" assumed {min(args.workers, args.speedup):g}x throughput: list-scheduled makespan"
            f" {simulate(part, args.workers, spu):,.0f} s (+ ~40 s start-up: imports, warm-up)"
        )
    units = sum(j.cost for j in jobs)
    lines.append(
        f"all: {units:,.0f} units, makespan {simulate(jobs, args.workers, spu):,.0f} s;"
        f" peak memory if the {args.workers} largest jobs ran at once:"
        f" {sum(sorted((j.memory_mb for j in jobs), reverse=True)[: args.workers]):,.0f} MB"
        f" (the scheduler keeps it under {args.gpu_memory_mb:,.0f})"
    )
    return "\n".join(lines)


def prefetch(tasks: list[str]) -> None:
    """Convert the GGUF once and verify the data artifacts before the workers start (so that
    K workers do not convert concurrently)."""
    from optkit_nlp.models import ensure_converted
    from optkit_nlp.text_data import load_task

    start = time.perf_counter()
    ensure_converted("smollm2-135m")
    for task in tasks:
        load_task(task.replace("-", "_"))
    print(f"prefetch {time.perf_counter() - start:.1f} s", flush=True)


class Worker:
    """A worker subprocess, its current job and a thread that reads its stdout lines."""

    def __init__(self, index: int, args: argparse.Namespace, lines: queue.Queue[Any]) -> None:
        self.index = index
        self.job: Job | None = None
        self.started = 0.0
        self.ready = False
        self.alive = True
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1",
        }
        env.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
        log = (args.out / "logs" / f"worker-{index}.log").open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                "--rows",
                str(args.out / "rows" / f"worker-{index}.jsonl"),
                "--device",
                args.device,
                "--index",
                str(index),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        out: IO[str] = self.proc.stdout
        threading.Thread(target=self._read, args=(out, lines), daemon=True).start()

    def _read(self, out: IO[str], lines: queue.Queue[Any]) -> None:
        for line in out:
            lines.put((self.index, line.strip()))
        lines.put((self.index, "EOF"))

    def send(self, job: Job, scale: Scale, jobs_dir: Path, now: float) -> None:
        assert self.proc.stdin is not None
        message = {"job": job.to_json(), "scale": asdict(scale), "jobs_dir": str(jobs_dir)}
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()
        self.job, self.started = job, now


def run(args: argparse.Namespace, scale: Scale, jobs: list[Job]) -> bool:
    """Schedule ``jobs`` on ``args.workers`` workers (module docstring). False when every
    worker died with jobs left (their logs say why)."""
    start = time.perf_counter()
    for sub in ("rows", "logs"):
        (args.out / sub).mkdir(parents=True, exist_ok=True)
    jobs_dir = args.jobs_dir or args.out / "jobs"
    (args.out / "plan.txt").write_text(plan_text(jobs, scale, args) + "\n")
    prefetch(sorted({j.task for j in jobs}))
    lines: queue.Queue[Any] = queue.Queue()
    workers = [Worker(i, args, lines) for i in range(min(args.workers, len(jobs)))]
    pending = list(jobs)
    done_units, done_seconds = 0.0, 0.0
    skipped: list[str] = []
    parent_rows = (args.out / "rows" / "scheduler.jsonl").open("a")

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] {text}", flush=True)

    def spu() -> float:
        return done_seconds / done_units if done_units > 0 else seconds_per_unit(args)

    while True:
        now = time.perf_counter() - start
        if now >= args.deadline:
            for w in workers:
                if w.job is not None and w.alive:
                    log(f"deadline: killing worker {w.index} running {w.job.id}")
                    w.proc.kill()
                    skipped.append(f"{w.job.id} (killed at the deadline)")
                    w.job, w.alive = None, False
            break
        used = sum(w.job.memory_mb for w in workers if w.job is not None)
        for w in workers:
            if not (w.ready and w.alive and w.job is None) or now >= args.time_limit:
                continue
            for job in list(pending):
                if now + job.cost * spu() * 1.1 > args.deadline:
                    pending.remove(job)
                    skipped.append(
                        f"{job.id} (estimated {job.cost * spu():.0f} s: past the deadline)"
                    )
                    continue
                if used + job.memory_mb > args.gpu_memory_mb and used > 0:
                    continue  # wait for memory; a smaller job further down may fit
                pending.remove(job)
                w.send(job, scale, jobs_dir, now)
                used += job.memory_mb
                log(f"worker {w.index} <- {job.id} (est {job.cost * spu():.0f} s)")
                break
        running = [w for w in workers if w.job is not None]
        if not running and (
            not pending or now >= args.time_limit or not any(w.alive for w in workers)
        ):
            break
        try:
            index, line = lines.get(timeout=1.0)
        except queue.Empty:
            continue
        w = workers[index]
        if line.startswith("READY"):
            w.ready = True
            log(f"worker {index} ready (warm-up {line.split()[1]} s)")
        elif line.startswith("DONE"):
            _, job_id, status, wall = line.split()
            assert w.job is not None and w.job.id == job_id
            if status == "ok":
                done_units += w.job.cost
                done_seconds += float(wall)
            log(f"worker {index} done {job_id} {status} {float(wall):.1f} s (s/unit {spu():.3f})")
            w.job = None
        elif line == "EOF":
            w.alive = False
            if w.job is not None:
                log(f"worker {index} died running {w.job.id}")
                row = {"job": w.job.id, "suite": w.job.suite, "task": w.job.task}
                row.update(seed=w.job.seed, method=w.job.kind, status="failed")
                row["error"] = f"worker died (see logs/worker-{index}.log)"
                parent_rows.write(json.dumps(row) + "\n")
                parent_rows.flush()
                w.job = None
        else:
            log(f"worker {index}: {line}")
    if now < args.deadline:
        skipped += [f"{j.id} (time limit)" for j in pending]
    for w in workers:
        if w.alive and w.proc.stdin is not None:
            w.proc.stdin.close()
    for w in workers:
        try:
            w.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            w.proc.kill()
    parent_rows.close()
    (args.out / "skipped.txt").write_text("".join(s + "\n" for s in skipped))
    log(f"finished; {len(skipped)} job(s) not run (skipped.txt)")
    if pending and now < args.deadline and not any(w.alive for w in workers):
        log(f"every worker died; {len(pending)} job(s) left: see {args.out / 'logs'}")
        return False
    return True


def rows_from_jobs(jobs: list[Job], scale: Scale, jobs_dir: Path, out: Path) -> Path:
    """``out/flexora_results.jsonl`` rebuilt from the jobs' own ``results.jsonl`` (their
    ``end`` rows, through :func:`rows_of`); unfinished or failed jobs are left out. The
    worker-side fields are unknown then: ``job_wall_s`` is ``None`` and ``job_peak_memory_mb``
    is the largest stage peak."""
    rows = []
    for job in jobs:
        path = jobs_dir / job.id / "results.jsonl"
        if not path.exists():
            continue
        results = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        end = next((r for r in results if r.get("event") == "end"), None)
        if end is None or any(r.get("event") == "error" for r in results):
            continue
        for row in rows_of(job, scale, end):
            row.update(
                status="ok",
                job_wall_s=None,
                job_peak_memory_mb=row.get("peak_memory_mb"),
                job_cost_units=job.cost,
            )
            rows.append(row)
    return write_rows(rows, out)


def write_rows(rows: list[dict[str, Any]], out: Path) -> Path:
    """Rows sorted by (suite, task, seed, method, job) into ``out/flexora_results.jsonl``."""
    rows.sort(key=lambda r: (r.get("suite", ""), r["task"], r["seed"], r["method"], r["job"]))
    out.mkdir(parents=True, exist_ok=True)
    target = out / "flexora_results.jsonl"
    target.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return target


def merge(out: Path) -> Path:
    """Concatenate the workers' rows (whole lines only) into ``out/flexora_results.jsonl``."""
    rows = []
    for path in sorted((out / "rows").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill (cannot happen with one write per job)
    return write_rows(rows, out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table is not None:
        from flexora_report import write_report

        print(write_report(args.table, args.report_dir))
        return 0
    scale = make_scale(args)
    jobs = build_jobs(args, scale)
    if args.plan:
        print(plan_text(jobs, scale, args))
        return 0
    if args.rows_from_jobs is not None:
        print(rows_from_jobs(jobs, scale, args.rows_from_jobs, args.out))
        return 0
    ok = run(args, scale, jobs)
    results = merge(args.out)
    from flexora_report import write_report

    print(write_report([results], args.out))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
