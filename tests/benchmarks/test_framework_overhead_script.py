"""``benchmarks/framework_overhead.py`` (issue 18, point 7; run by hand on the CPU and the GPU)
at its smoke size on the CPU: it runs and writes, per objective, the ratios of the framework's
iteration to the plain ``torch.optim`` loop and the oracle's own time per round."""

from __future__ import annotations

import json
import math
import runpy
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "framework_overhead.py"


@pytest.mark.optex  # it also times the oracle inside the registered optex
def test_framework_overhead_small(tmp_path: Path) -> None:
    script = runpy.run_path(str(SCRIPT), run_name="framework_overhead")
    out = tmp_path / "overhead.json"
    script["main"](["--small", "--devices", "cpu", "--out", str(out)])
    cpu = json.loads(out.read_text())["devices"]["cpu"]
    assert cpu, "no objective was measured"
    for name, row in cpu.items():
        for key in ("ratio_step", "ratio_run_loop"):
            assert math.isfinite(row["iteration"][key]) and row["iteration"][key] > 0, (name, key)
        assert row["oracle_in_optex"]["oracle_ms"] > 0, name


def test_networks_are_the_gpu_studys_models_and_only_is_checked_first() -> None:
    """``--networks`` times the models of the GPU study's task files at batch 256 with their
    vanilla rows' rates (one definition, :data:`optkit.testing.GPU_STUDY_NETWORKS`, also read by
    ``optex_gpu.py``; the specs build through the registry, their data is loaded only by
    ``prepare`` on the GPU machine), and a bad ``--only`` exits 2 before anything is timed,
    naming the valid networks."""
    from optkit import load_task
    from optkit.registry import get_registry
    from optkit.testing import GPU_STUDY_NETWORKS

    script = runpy.run_path(str(SCRIPT), run_name="framework_overhead")
    gpu = runpy.run_path(str(SCRIPT.with_name("optex_gpu.py")), run_name="optex_gpu")
    assert script["NETWORKS"] is GPU_STUDY_NETWORKS and gpu["NETWORKS"] is GPU_STUDY_NETWORKS
    tasks = SCRIPT.parents[1] / "tasks"
    studies = {"fashion_cnn_b256": "fashion", "shakespeare_b256": "shakespeare"}
    assert set(GPU_STUDY_NETWORKS) == set(studies)
    for name, (spec, lr) in GPU_STUDY_NETWORKS.items():
        task = load_task(tasks / f"study-optex-networks-{studies[name]}-gpu.toml")
        [study_objective] = task.objectives
        assert study_objective.name == spec["name"], name
        assert {k: v for k, v in spec.items() if k != "name"}.items() <= (
            study_objective.config.items()
        ), (name, study_objective.config)
        vanilla = next(o for o in task.optimizers if o.label == "vanilla")
        assert vanilla.config["lr"] == lr, name
        assert get_registry().create("objective", spec).name == spec["name"]
    with pytest.raises(ValueError, match=r"unknown network\(s\) cifar; valid: fashion_cnn_b256"):
        script["check_only"]("cifar", True)
    for argv in (["--networks", "--only", "cifar"], ["--only", "fashion_cnn_b256"]):
        with pytest.raises(SystemExit) as exit_info:
            script["main"]([*argv, "--out", "unused.json"])
        assert exit_info.value.code == 2
