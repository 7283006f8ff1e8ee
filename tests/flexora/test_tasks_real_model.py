"""Flexora and the baselines end to end on the real SmolLM2-135M (CPU-sized task files).

The first test in a fresh cache converts the GGUF artifact (about 25 s); later loads read the
cached safetensors copy (about 1 s).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
import torch

import optkit
from optkit.errors import ConfigError
from optkit.tasks import check_task, load_task

pytestmark = pytest.mark.nlp

TASKS = Path(__file__).resolve().parents[2] / "tasks"


def _run(task: str | dict[str, Any], out: Path) -> list[dict[str, Any]]:
    summary = optkit.run(task, out=out)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    errors = [r for r in rows if r.get("event") == "error"]
    assert not summary.cells_failed and not errors, errors
    return rows


@pytest.mark.parametrize("path", sorted(TASKS.glob("flexora-*.toml")), ids=lambda p: p.name)
def test_every_flexora_task_file_validates(path: Path) -> None:
    check_task(load_task(path))


def test_flexora_three_stages_on_real_model(tmp_path: Path) -> None:
    rows = _run(str(TASKS / "flexora-us_debates-cpu.toml"), tmp_path)
    search = [r for r in rows if r.get("stage") == "search"]
    assert len(search) == 2 and all(len(r["gates"]) == 30 for r in search)
    # gates move away from 1 once the LoRA step has made B non-zero
    assert max(abs(g - 1.0) for g in search[-1]["gates"]) > 1e-5
    end = next(r for r in rows if r["event"] == "end")
    selected = [int(i) for i in end["selected_layers_str"].split(",")]
    assert end["num_selected"] == len(selected) and end["num_layers"] == 30
    # the fresh LoRA lives on the selected layers only: 2 modules x 2 factors x r x (576+192)
    per_layer = 8 * 576 + 8 * 576 + 8 * 576 + 8 * 192
    assert end["trainable_params"] == per_layer * len(selected)
    assert end["search_trainable_params"] == per_layer * 30
    assert 0.0 <= end["test_accuracy"] <= 1.0
    for key in ("search_s", "selection_s", "finetune_s"):
        assert end[key] >= 0.0


def test_flexora_with_optex_as_inner_optimizer(tmp_path: Path) -> None:
    rows = _run(str(TASKS / "flexora-us_debates-optex-cpu.toml"), tmp_path)
    end = next(r for r in rows if r["event"] == "end")
    assert end["optimizer"] == "optex" and end["num_selected"] == 4  # top_k = 4
    assert end["hypergradient"] == "finite_difference"


def test_unrolled_needs_a_differentiable_inner_optimizer(tmp_path: Path) -> None:
    raw = tomllib.loads((TASKS / "flexora-us_debates-optex-cpu.toml").read_text())
    raw["hyperoptimizer"]["hypergradient"] = "unrolled"
    summary = optkit.run(raw, out=tmp_path)
    assert summary.cells_failed
    rows = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    error = next(r for r in rows if r["event"] == "error")
    assert "supports sgd, adam and adamw, not 'optex'" in error["error"]


def test_adalora_and_lora_drop_baselines(tmp_path: Path) -> None:
    raw = tomllib.loads((TASKS / "flexora-us_debates-baselines-cpu.toml").read_text())
    raw["hyperoptimizer"]["methods"] = ["adalora", "lora_drop"]
    rows = _run(raw, tmp_path)
    end = next(r for r in rows if r["event"] == "end")
    drop = next(r for r in rows if r.get("stage") == "lora_drop-scores")
    assert len(drop["importance"]) == 30 and min(drop["importance"]) > 0
    assert end["lora_drop_layers"] == ",".join(map(str, drop["kept"]))
    assert end["lora_drop_layers_trained"] < 30
    # AdaLoRA: update_and_allocate ran every step (its rank allocator has seen the gradients)
    assert end["adalora_layers_trained"] == 30 and end["adalora_trainable_params"] > 0


@pytest.mark.slow
def test_all_baselines_cpu_task(tmp_path: Path) -> None:
    rows = _run(str(TASKS / "flexora-us_debates-baselines-cpu.toml"), tmp_path)
    end = next(r for r in rows if r["event"] == "end")
    for method in ("lora", "dora", "rslora", "adalora", "lora_drop", "random"):
        assert 0.0 <= end[f"{method}_test_accuracy"] <= 1.0
    assert end["random_layers_trained"] == 3


def _objective(**config: Any) -> Any:
    spec = {"name": "us_debates", "train_size": 8, "val_size": 2, "test_size": 2, **config}
    obj = optkit.get_registry().create("objective", spec)
    obj.prepare(torch.device("cpu"), torch.float32)
    return obj


def test_peft_variants_and_layer_subsets_count_parameters() -> None:
    lora = _objective(layers=[0, 29])
    assert lora.trainable_parameter_count() == 2 * (3 * 8 * 576 + 8 * 192)
    dora = _objective(peft="dora", layers=[0, 29])
    assert dora.trainable_parameter_count() == lora.trainable_parameter_count() + 2 * (576 + 192)
    rs = _objective(peft="rslora", layers=[0])
    lora_module = rs.model.get_submodule("base_model.model.model.layers.0.self_attn.q_proj")
    assert lora_module.scaling["default"] == pytest.approx(16.0 / 8**0.5)


def test_bad_objective_inputs_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match=r"target_modules \['qkv'\] not found"):
        _objective(target_modules=["qkv"])
    with pytest.raises(ConfigError, match=r"layers .* out of range"):
        _objective(layers=[30])
    with pytest.raises(ConfigError, match="the task has only 802"):
        _objective(train_size=5000)
    with pytest.raises(ConfigError, match="val_size must be >= 1"):
        optkit.get_registry().create("objective", {"name": "us_debates", "val_size": 0})


def test_flexora_refuses_a_validation_split_too_small(tmp_path: Path) -> None:
    raw = tomllib.loads((TASKS / "flexora-us_debates-cpu.toml").read_text())
    raw["objective"]["val_size"] = 1
    with pytest.raises(ConfigError, match="at least 2 examples must be held out"):
        optkit.run(raw, out=tmp_path / "run")  # refused before anything runs
    assert not (tmp_path / "run" / "results.jsonl").exists()


def test_multiple_choice_scoring_beats_chance_untrained() -> None:
    """The pretrained model scores Rotten Tomatoes reviews above chance (real data, real model)."""
    obj = _objective_rt()
    params = obj.init_params(torch.Generator().manual_seed(0))
    assert obj.evaluate_split(params, "test")["accuracy"] >= 0.6


def _objective_rt() -> Any:
    spec = {
        "name": "rotten_tomatoes",
        "train_size": 4,
        "val_size": 2,
        "test_size": 24,
        "eval_batch_size": 24,
        "max_length": 40,
    }
    obj = optkit.get_registry().create("objective", spec)
    obj.prepare(torch.device("cpu"), torch.float32)
    return obj
