"""The study task files (``tasks/study-*.toml``, ``tasks/bench-*.toml``) at a tiny size through
``optkit bench`` and ``optkit report --format json``: each runs, and the report has a row per
objective and method with the study's target. Every shipped task file is also checked by
``tests/integration/test_task_files.py``; the studies on real data or GPUs are checked there
only (their data and devices are not CI's)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from optkit.cli import main
from optkit.tasks import load_task

TASKS = Path(__file__).resolve().parents[2] / "tasks"

TINY: dict[str, list[str]] = {
    "study-optex-synthetic.toml": [
        "objectives.0.dim=20",
        "objectives.1.dim=20",
        "optimizers.4.mll_steps=2",
    ],
    "study-optex-synthetic-noisy.toml": [f"objectives.{i}.dim=20" for i in range(4)],
    "study-optex-options-synthetic.toml": [
        *(f"objectives.{i}.dim=20" for i in range(4)),
        "optimizers.5.effective_dim=10",
    ],
    "study-hpo-rosenbrock.toml": [
        "objective.dim=5",
        "hyperoptimizers.0.trials=2",
        "hyperoptimizers.0.initial_trials=2",
        "hyperoptimizers.1.trials=2",
    ],
}
"""Overrides that make each study tiny (besides one seed and three iterations)."""

ONLY_CHECKED = {
    "study-hpo-mnist.toml": "MNIST data",
    "study-workloads-cifar10-cpu.toml": "CIFAR-10 data",
    "study-workloads-dqn-cpu.toml": "gymnasium, 1,500 iterations",
    "study-workloads-shakespeare-cpu.toml": "Shakespeare data",
    "study-multigpu-cifar10.toml": "GPUs, Ray, CIFAR-10 data",
    "study-multigpu-shakespeare.toml": "GPUs, Ray, Shakespeare data",
    "study-flexora-ablation.toml": "SmolLM2-135M and BIG-bench data",
    "study-flexora-ablation-unrolled.toml": "SmolLM2-135M and BIG-bench data",
    "study-optex-wsplit-mnist-cpu.toml": "MNIST data (tested by tests/optex/test_wsplit.py)",
    "study-optex-wsplit-fashion-mnist.toml": "Fashion-MNIST data, a GPU",
    "study-optex-networks-mlp-cpu.toml": "MNIST data, 130 runs (same keys as the W-split task)",
    "study-optex-networks-shakespeare-cpu.toml": "Shakespeare data, 88 runs",
    "study-optex-networks-dqn-cpu.toml": "gymnasium, 1,500 iterations, 88 runs",
    "study-optex-safeguard-dqn-cpu.toml": "gymnasium, 1,500 iterations, 66 runs",
    "study-optex-networks-dqn-per-round-cpu.toml": "gymnasium, 1,500 iterations, 88 runs",
    "study-optex-shared-batches-shakespeare-cpu.toml": "Shakespeare data, 66 runs",
    "study-optex-shared-batches-mlp-cpu.toml": "MNIST data, 78 runs",
    "study-optex-adaptive-shakespeare-cpu.toml": "Shakespeare data, 55 runs",
    "study-optex-adaptive-mlp-cpu.toml": "MNIST data, 65 runs",
    "study-optex-safeguard-mlp-cpu.toml": "MNIST data, 78 runs (rows of the MLP study)",
    "study-optex-safeguard-shakespeare-cpu.toml": "Shakespeare data, 66 runs (rows of the LM study)",
    "study-optex-networks-fashion-gpu.toml": "Fashion-MNIST data, a GPU, 91 runs",
    "study-optex-networks-shakespeare-gpu.toml": "a GPU, 77 runs of the paper-sized model",
    "study-optex-lr-sweep-shakespeare-cpu.toml": "Shakespeare data, 30 runs",
    "study-flexora-regime-minilm.toml": "a GPU (its options: tests/flexora/test_regime_options.py)",
    "study-flexora-regime-smollm2.toml": "several GPU runs (same options as the MiniLM study)",
    "study-flexora-regime-minilm-optex.toml": "a GPU (the MiniLM study with OptEx inside)",
}
"""Studies this file does not run, and why (they are validated by test_task_files.py)."""


def test_every_study_is_run_or_listed() -> None:
    shipped = {p.name for p in TASKS.glob("study-*.toml")} | {
        p.name for p in TASKS.glob("bench-*.toml")
    }
    assert shipped == set(TINY) | set(ONLY_CHECKED)


@pytest.mark.optex
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.bo) if "hpo" in n else n for n in sorted(TINY)]
)
def test_study_runs_tiny(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    task = load_task(TASKS / name)
    overrides = ["seeds=[0]", "budget.iterations=3", "budget.eval_every=1", *TINY[name]]
    out = tmp_path / "run"
    args = ["bench", str(TASKS / name), "--out", str(out)]
    for override in overrides:
        args += ["--set", override]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["report", str(out), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    labels = {r["label"] for r in rows}
    objectives = {r["objective"] for r in rows}
    assert (
        len(rows)
        == len(labels) * len(objectives)
        == len(task.objectives) * len({c.label for c in task.cells()})
    )
    if task.target is not None:
        reference = [r for r in rows if r["label"] == task.target.reference]
        assert reference and all(r["steps_to_target"]["reached"] == "1/1" for r in reference)


@pytest.mark.parametrize("workload", ["mlp", "shakespeare", "dqn"])
def test_safeguard_tasks_keep_their_network_studys_protocol(workload: str) -> None:
    """The safeguard studies add rows to the network studies and claim the same objective,
    budget, seeds, tuning and target (so the tuned vanilla rate and target are the same):
    checked, so that the near-copies cannot drift apart."""
    study = load_task(TASKS / f"study-optex-networks-{workload}-cpu.toml")
    safeguard = load_task(TASKS / f"study-optex-safeguard-{workload}-cpu.toml")
    for key in ("objective", "budget", "seeds", "tuning", "target", "executor", "device"):
        assert key in study.raw and safeguard.raw[key] == study.raw[key], key
    vanilla = [o for o in study.raw["optimizers"] if o.get("label") == "vanilla"]
    assert len(vanilla) == 1
    assert vanilla == [o for o in safeguard.raw["optimizers"] if o.get("label") == "vanilla"]
