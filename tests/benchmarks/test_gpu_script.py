"""The GPU benchmark script (``benchmarks/optex_gpu.py``, run by hand on a GPU machine) at
its CPU smoke size: it runs, every variant is accepted by the installed optimizers, and the
JSON holds the numbers the issue-18 goal is read from."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "optex_gpu.py"


@pytest.mark.optex
def test_optex_gpu_small(tmp_path: Path) -> None:
    script = runpy.run_path(str(SCRIPT), run_name="optex_gpu")
    out = tmp_path / "optex-gpu.json"
    script["main"](["--small", "--out", str(out)])
    result = json.loads(out.read_text())
    (name,) = result["iteration_ms"]
    row = result["iteration_ms"][name]
    assert row["errors"] == {}, "a variant's config was rejected: update specs() in the script"
    for label in script["specs"](0.01):
        assert row[label] > 0 and row[f"{label}_synced"] > 0
        assert result["to_target"][name][label]["iterations"] >= 1
    goal = result["goal"][name]
    assert goal["vanilla_over_plain_loop"] == pytest.approx(row["vanilla"] / row["raw_adam"])
    assert goal["optex_oracle_ms_per_round"] == row["optex_oracle_ms"] > 0
    estimator = result["estimator"]["200"]
    assert estimator["history_bytes"] == estimator["two_T0_d_floats_bytes"]
    assert estimator["query_ms"] > 0 and estimator["begin_ms"] > 0


def test_network_objectives_are_valid_specs_and_only_names_what_exists() -> None:
    """``--networks``' specs build through the registry (config checked; their data is loaded
    only by ``prepare``, on the GPU machine), and ``--only`` with an unknown name is refused
    before anything is timed, naming the valid ones."""
    from optkit.registry import get_registry

    script = runpy.run_path(str(SCRIPT), run_name="optex_gpu")
    registry = get_registry()
    for spec, lr in script["NETWORKS"].values():
        assert registry.create("objective", spec).name == spec["name"] and lr > 0
    chosen = script["choose_objectives"](False, True, "fashion_cnn_b256,shakespeare_b256")
    assert list(chosen) == ["fashion_cnn_b256", "shakespeare_b256"]
    with pytest.raises(ValueError, match=r"unknown objective.*cifar.*valid here: rosenbrock_d200"):
        script["choose_objectives"](True, False, "cifar")
    with pytest.raises(SystemExit) as exit_info:
        script["main"](["--small", "--only", "cifar"])
    assert exit_info.value.code == 2
