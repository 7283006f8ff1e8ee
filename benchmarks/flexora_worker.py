"""One worker process of the Flexora benchmark (started by flexora_bench.py, one per slot).

Protocol: the worker warms the device up, prints ``READY``, then reads one job per line on
stdin (JSON: ``{"job": Job fields, "scale": Scale fields, "jobs_dir": ...}``), runs it with
``optkit.run``, appends the job's result rows (whole JSON lines, one ``os.write`` of an
``O_APPEND`` file per job, so a killed worker leaves no half row) to ``--rows``, and prints
``DONE <job id> <status> <wall s>``. It exits at the end of stdin.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from flexora_jobs import Job, Scale, rows_of, task_dict


def warm_up(device: str) -> None:
    """One forward/backward of SmolLM2 with LoRA on a tiny slice, so that the first timed
    search step of the worker does not pay CUDA's and the kernels' start-up."""
    import torch

    import optkit

    objective = optkit.get_registry().create(
        "objective",
        {
            "name": "strategyqa",
            "train_size": 8,
            "val_size": 2,
            "test_size": 2,
            "batch_size": 4,
            "max_length": 48,
            "attn_implementation": "sdpa",
        },
        "flexora bench warm-up",
    )
    objective.prepare(torch.device(device), torch.float32)
    gen = torch.Generator().manual_seed(0)
    params = {k: v.requires_grad_(True) for k, v in objective.init_params(gen).items()}
    for _ in range(2):
        loss = objective.loss(params, objective.sample_split_batch("train", gen))
        torch.autograd.grad(loss, list(params.values()))
    del objective, params
    release(device)


def release(device: str) -> None:
    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def run_job(job: Job, scale: Scale, jobs_dir: Path) -> tuple[list[dict[str, Any]], str]:
    """Run ``job``; its rows (or one ``status = failed`` row) and the status."""
    import torch

    import optkit

    cuda = scale.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    out = jobs_dir / job.id
    start = time.perf_counter()
    status, rows = "ok", []
    try:
        summary = optkit.run(task_dict(job, scale), out=out)
        lines = (out / "results.jsonl").read_text().splitlines()
        results = [json.loads(x) for x in lines if x.strip()]
        if summary.cells_failed:
            err = next((r.get("error") for r in results if r.get("event") == "error"), None)
            raise RuntimeError(err or "cell failed")
        end = next(r for r in results if r.get("event") == "end")
        rows = rows_of(job, scale, end)
    except Exception as exc:  # recorded; the worker goes on with the next job
        status = "failed"
        rows = [
            {
                "job": job.id,
                "suite": job.suite,
                "task": job.task,
                "seed": job.seed,
                "method": job.kind,
                "status": "failed",
                "error": f"{type(exc).__name__}: {exc}"[:2000],
                "traceback": traceback.format_exc(limit=6)[-3000:],
            }
        ]
    wall = time.perf_counter() - start
    job_peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0
    for row in rows:
        row.setdefault("status", status)
        row.update(job_wall_s=wall, job_peak_memory_mb=job_peak, job_cost_units=job.cost)
    release(scale.device)
    return rows, status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=Path, required=True, help="JSONL file this worker appends")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--index", type=int, default=0)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    warm = time.perf_counter()
    warm_up(args.device)
    print(f"READY {time.perf_counter() - warm:.1f}", flush=True)
    args.rows.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(args.rows, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            message = json.loads(line)
            fields = {k: v for k, v in message["job"].items() if k != "id"}
            job, scale = Job(**fields), Scale(**message["scale"])
            rows, status = run_job(job, scale, Path(message["jobs_dir"]))
            for row in rows:
                row["worker"] = args.index
            data = "".join(json.dumps(r) + "\n" for r in rows).encode()
            while data:  # a regular file takes it in one write; loop for safety
                data = data[os.write(fd, data) :]
            wall = rows[0]["job_wall_s"]
            print(f"DONE {job.id} {status} {wall:.2f}", flush=True)
    finally:
        os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
