"""Jobs of the Flexora benchmark: the (task, seed, method) cells, their task dicts, their cost.

A job is one ``optkit.run`` of one task dict (one seed, one method or one Flexora call) and
yields one or two result rows (:func:`rows_of`). The cost model counts *units*: one unit is
one fine-tune step of LoRA on all 30 layers at the benchmark scale (measured on the H200 on
2026-11-29, one process: about 0.16-0.20 s, launch-bound). The relative costs below come from
that run (``docs/benchmarks/flexora.md``): DoRA 1.32, AdaLoRA 1.6, full fine-tuning 1.0, a
LoRA step on about half the layers 0.8, a first-order search step 2.2 units (a LoRA step on
every layer + a validation forward/backward to the gate logits).
"""

from __future__ import annotations

import argparse
import math
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("social_iqa", "winowhy", "strategyqa", "rotten-tomatoes")
METHODS = ("flexora", "random", "lora", "dora", "rslora", "adalora", "lora_drop", "full")
BASELINES = ("lora", "dora", "rslora", "adalora", "lora_drop", "full")
MODES = ("first_order", "unrolled", "finite_difference")

STEP_UNITS = {"lora": 1.0, "rslora": 1.0, "dora": 1.32, "adalora": 1.6, "full": 1.0}
SELECTED_STEP_UNITS = 0.8  # LoRA on the selected / random / kept layers (about half)
SEARCH_STEP_UNITS = {"first_order": 2.2, "finite_difference": 4.5, "unrolled": 5.0}
EAGER_FACTOR = 1.3  # eager attention (needed by 'unrolled') against sdpa
EVAL_UNITS_PER_BATCH = 0.4  # one no-grad evaluation batch (eval_batch_size examples)
LOAD_UNITS = 8.0  # loading the model from the safetensors cache and attaching adapters
SECONDS_PER_UNIT = 0.16  # one process on the H200, 2026-11-29

# Peak GPU memory (MB) of a LoRA fine-tune per task at batch 16, max_length 96 (2026-11-29);
# methods scale it; a worker process adds its CUDA context and allocator slack.
TASK_MEMORY_MB = {"social_iqa": 8_500, "winowhy": 7_600, "strategyqa": 3_700}
TASK_MEMORY_MB["rotten-tomatoes"] = 6_400
METHOD_MEMORY = {"dora": 1.13, "full": 1.75, "adalora": 1.02}
MODE_MEMORY = {"unrolled": 3.0, "finite_difference": 1.2, "first_order": 1.05}
PROCESS_OVERHEAD_MB = 1_500


@dataclass
class Scale:
    """Sizes shared by every job (see ``--help`` of flexora_bench.py)."""

    train_size: int = 960
    val_size: int = 100
    test_size: int = 300
    batch_size: int = 16
    eval_batch_size: int = 64
    max_length: int = 96
    epochs: float = 2.0
    search_fraction: float = 1 / 12
    gate_lr: float = 0.1
    lr: float = 1e-3
    full_lr: float = 2e-5
    attn: str = "sdpa"
    device: str = "cuda"

    @property
    def finetune_steps(self) -> int:
        return max(1, round(self.epochs * self.train_size / self.batch_size))

    def search_steps(self, fraction: float | None = None) -> int:
        return max(1, round((fraction or self.search_fraction) * self.finetune_steps))

    @property
    def drop_steps(self) -> int:
        """LoRA-drop's short LoRA run: the compute of Flexora's search (a search step costs
        about two LoRA steps)."""
        return 2 * self.search_steps()

    @property
    def eval_batches(self) -> int:
        b = self.eval_batch_size
        return math.ceil(self.test_size / b) + math.ceil(self.val_size / b)


@dataclass
class Job:
    """One ``optkit.run``: ``kind`` is ``flexora`` (search, selection, fine-tune, and the
    random-layers control when ``suite == 'main'``) or a baseline method."""

    task: str
    seed: int
    kind: str
    suite: str = "main"
    mode: str = "first_order"
    search_steps: int = 0
    cost: float = 0.0
    memory_mb: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        tail = f"-{self.mode}-{self.search_steps}" if self.suite == "ablation" else ""
        return f"{self.suite}-{self.task}-s{self.seed}-{self.kind}{tail}"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "id": self.id}


def job_cost(job: Job, scale: Scale) -> float:
    """Estimated cost of ``job`` in units (module docstring)."""
    steps = scale.finetune_steps
    evals = scale.eval_batches * EVAL_UNITS_PER_BATCH
    if job.kind == "flexora":
        search = job.search_steps * SEARCH_STEP_UNITS[job.mode]
        finetunes = 2 if job.suite == "main" else 1
        cost = search + finetunes * (steps * SELECTED_STEP_UNITS + evals + LOAD_UNITS) + LOAD_UNITS
        return cost * (EAGER_FACTOR if job.mode == "unrolled" else 1.0)
    if job.kind == "lora_drop":
        score = 8 * 0.4
        return scale.drop_steps + score + steps * SELECTED_STEP_UNITS + evals + 2 * LOAD_UNITS
    return steps * STEP_UNITS[job.kind] + evals + LOAD_UNITS


def job_memory(job: Job) -> float:
    """Estimated peak GPU memory (MB) of the worker process while it runs ``job``."""
    base = TASK_MEMORY_MB[job.task]
    if job.kind == "flexora":
        base *= MODE_MEMORY[job.mode]
    else:
        base *= METHOD_MEMORY.get(job.kind, 1.0)
    return base + PROCESS_OVERHEAD_MB


def build_jobs(args: argparse.Namespace, scale: Scale) -> list[Job]:
    """Every job of the selected suites, in the order they should start (see ``order``)."""
    jobs: list[Job] = []
    if args.suite in ("main", "all"):
        for seed in args.seeds:
            for task in args.tasks:
                for kind in ("flexora", *[m for m in BASELINES if m in args.methods]):
                    if kind == "flexora" and "flexora" not in args.methods:
                        continue
                    jobs.append(Job(task, seed, kind, "main", "first_order", scale.search_steps()))
    if args.suite in ("ablation", "all"):
        for seed in args.ablation_seeds:
            for task in args.ablation_tasks:
                for fraction in args.ablation_budgets:
                    steps = scale.search_steps(fraction)
                    for mode in args.ablation_modes:
                        if mode == "first_order" and steps == scale.search_steps():
                            continue  # the main table's Flexora cell is this configuration
                        jobs.append(Job(task, seed, "flexora", "ablation", mode, steps))
    for job in jobs:
        job.cost = job_cost(job, scale)
        job.memory_mb = job_memory(job)
    return order(jobs, args.order, args.seeds)


def order(jobs: list[Job], how: str, seeds: list[int]) -> list[Job]:
    """``lpt``: longest first within each suite (main before ablation); ``seed``: also seed
    by seed, so that a time limit drops whole late seeds rather than the short methods of every
    seed. Both keep the queue's head the job to start next."""
    suite = {"main": 0, "ablation": 1}
    if how == "lpt":
        return sorted(jobs, key=lambda j: (suite[j.suite], -j.cost))
    return sorted(jobs, key=lambda j: (suite[j.suite], j.seed, -j.cost))


def simulate(jobs: list[Job], workers: int, seconds_per_unit: float) -> float:
    """Makespan (s) of list scheduling ``jobs`` in order on ``workers`` workers, each job
    taking ``cost * seconds_per_unit`` seconds."""
    free = [0.0] * max(1, workers)
    for job in jobs:
        i = min(range(len(free)), key=free.__getitem__)
        free[i] += job.cost * seconds_per_unit
    return max(free)


def task_dict(job: Job, scale: Scale) -> dict[str, Any]:
    """The optkit task of ``job``: the task file ``tasks/flexora-<task>[-baselines].toml`` with
    the benchmark's scale applied (one seed, one method)."""
    name = f"flexora-{job.task}" + ("" if job.kind == "flexora" else "-baselines")
    raw = tomllib.loads((ROOT / "tasks" / f"{name}.toml").read_text())
    steps = scale.finetune_steps
    raw["seeds"] = [job.seed]
    raw["device"] = scale.device
    raw["budget"] = {"iterations": steps}
    attn = "eager" if job.mode == "unrolled" and job.kind == "flexora" else scale.attn
    raw["objective"].update(
        train_size=scale.train_size,
        val_size=scale.val_size,
        test_size=scale.test_size,
        batch_size=scale.batch_size,
        eval_batch_size=scale.eval_batch_size,
        max_length=scale.max_length,
        attn_implementation=attn,
    )
    raw["optimizer"] = {"name": "adamw", "lr": scale.lr, "weight_decay": 0.0}
    hyper = raw["hyperoptimizer"]
    hyper["finetune_steps"] = steps
    if job.kind == "flexora":
        hyper.update(
            search_steps=job.search_steps,
            hypergradient=job.mode,
            gate_lr=scale.gate_lr,
            selection="positive_logit",
            random_control=job.suite == "main",
        )
    else:
        hyper.update(
            methods=[job.kind],
            full_lr=scale.full_lr,
            drop_steps=scale.drop_steps,
        )
    raw["name"] = job.id
    return raw


def _common(job: Job, scale: Scale) -> dict[str, Any]:
    return {
        "job": job.id,
        "suite": job.suite,
        "task": job.task,
        "seed": job.seed,
        "finetune_steps": scale.finetune_steps,
        "train_size": scale.train_size,
        "test_size": scale.test_size,
        "batch_size": scale.batch_size,
    }


def rows_of(job: Job, scale: Scale, end: dict[str, Any]) -> list[dict[str, Any]]:
    """The result rows of a finished job from the ``end`` row of its ``results.jsonl``.

    Every row holds what the report needs: ``test_accuracy``, ``layers`` (list) and
    ``layers_trained`` / ``num_layers``, ``trainable_params``, ``search_s`` (Flexora's search
    loop; LoRA-drop's short run and scoring), ``finetune_s`` (the training loop),
    ``peak_memory_mb`` (largest stage peak, each stage's counter reset at its start).
    """
    common = _common(job, scale)
    if job.kind == "flexora":
        layers = [int(i) for i in str(end["selected_layers_str"]).split(",") if i != ""]
        flex = {
            **common,
            "method": "flexora",
            "hypergradient": end["hypergradient"],
            "search_steps": job.search_steps,
            "gate_lr": scale.gate_lr,
            "attn": "eager" if job.mode == "unrolled" else scale.attn,
            "test_accuracy": end["test_accuracy"],
            "val_accuracy": end.get("val_accuracy"),
            "layers": layers,
            "layers_trained": end["layers_trained"],
            "num_layers": end["num_layers"],
            "trainable_params": end["trainable_params"],
            "search_trainable_params": end["search_trainable_params"],
            "search_s": end["search_s"],
            "search_setup_s": end.get("search_setup_s"),
            "finetune_s": end["finetune_s"],
            "peak_memory_mb": max(end["peak_memory_mb"], end["search_peak_memory_mb"]),
            "search_peak_memory_mb": end["search_peak_memory_mb"],
            "finetune_peak_memory_mb": end["peak_memory_mb"],
            "selection_fallback": end.get("selection_fallback", False),
            "final_gates": end["final_gates"],
            "final_logits": end["final_logits"],
            "gates_per_step": end["gates_per_step"],
        }
        rows = [flex]
        if "random_test_accuracy" in end:
            rows.append(
                {
                    **common,
                    "method": "random",
                    "test_accuracy": end["random_test_accuracy"],
                    "val_accuracy": end.get("random_val_accuracy"),
                    "layers": end.get("random_layers", []),
                    "layers_trained": end["random_layers_trained"],
                    "num_layers": end["num_layers"],
                    "trainable_params": end["random_trainable_params"],
                    "search_s": 0.0,
                    "finetune_s": end["random_finetune_s"],
                    "peak_memory_mb": end["random_peak_memory_mb"],
                }
            )
        return rows
    m = job.kind
    layers = [int(i) for i in str(end[f"{m}_layers"]).split(",") if i != ""]
    return [
        {
            **common,
            "method": m,
            "test_accuracy": end[f"{m}_test_accuracy"],
            "val_accuracy": end.get(f"{m}_val_accuracy"),
            "layers": layers,
            "layers_trained": end[f"{m}_layers_trained"],
            "num_layers": end[f"{m}_num_layers"],
            "trainable_params": end[f"{m}_trainable_params"],
            "search_s": end.get(f"{m}_search_s", 0.0),
            "finetune_s": end[f"{m}_finetune_s"],
            "peak_memory_mb": end[f"{m}_peak_memory_mb"],
            **({"drop_steps": scale.drop_steps} if m == "lora_drop" else {}),
        }
    ]
