"""What the overfitting-regime study (issue 17) needs of the baselines, on the real SmolLM2:
periodic evaluation, LoRA early-stopped on the validation split, several random draws, and the
regime check ``overfit_nats``."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
import torch
from optkit_flexora.finetune import seeded_objective
from optkit_flexora.study_rows import ROW_KEYS, paired_differences, rows_from_end, study_rows

import optkit
from optkit.errors import ConfigError

from .helpers import text_cell_context

pytestmark = pytest.mark.nlp

TASKS = Path(__file__).resolve().parents[2] / "tasks"


def _end_row(raw: dict[str, Any], out: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    summary = optkit.run(raw, out=out)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    errors = [r for r in rows if r.get("event") == "error"]
    assert not summary.cells_failed and not errors, errors
    return next(r for r in rows if r["event"] == "end"), rows


def _baselines(**hyper: Any) -> dict[str, Any]:
    raw = tomllib.loads((TASKS / "flexora-us_debates-baselines-cpu.toml").read_text())
    raw["seeds"] = [0]
    raw["budget"]["iterations"] = 4
    raw["hyperoptimizer"].update(hyper)
    return raw


def test_lora_early_stop_shares_the_lora_run_and_random_draws_differ(tmp_path: Path) -> None:
    raw = _baselines(
        methods=["lora", "lora_early_stop", "random"],
        eval_every=2,
        finetune_steps=3,
        random_count=3,
        random_draws=2,
    )
    end, rows = _end_row(raw, tmp_path)
    evals = [r for r in rows if r.get("stage") == "lora-eval"]
    assert [r["step"] for r in evals] == [2, 3]  # one run, evaluated at 2 and at the end
    best = min(evals, key=lambda r: (r["val_loss"], r["step"]))
    assert end["lora_early_stop_best_val_step"] == best["step"]
    assert end["lora_early_stop_test_loss"] == pytest.approx(best["test_loss"])
    assert end["lora_early_stop_val_loss"] <= end["lora_val_loss"]
    assert end["lora_test_loss"] == pytest.approx(evals[-1]["test_loss"])
    lowest = min(r["test_loss"] for r in evals)
    assert end["lora_overfit_nats"] == pytest.approx(end["lora_test_loss"] - lowest)
    assert end["lora_overfit_nats"] >= 0.0
    assert end["lora_test_loss_curve"] == [r["test_loss"] for r in evals]
    first, second = end["random_layers"], end["random_d1_layers"]
    assert first != second
    assert len(first.split(",")) == len(second.split(",")) == 3
    assert end["random_d1_layers_trained"] == 3
    rows = study_rows([tmp_path], "regime")
    assert [(r["method"], r["draw"]) for r in rows] == [
        ("lora", 0),
        ("lora_early_stop", 0),
        ("random", 0),
        ("random", 1),
    ]
    assert all(set(ROW_KEYS) <= set(r) for r in rows)
    assert rows[1]["test_log_loss"] == end["lora_early_stop_test_loss"]
    assert rows[0]["test_size"] == 8 and rows[0]["layers_trained"] == rows[0]["num_layers"] == 30


@pytest.mark.parametrize(
    ("hyper", "message"),
    [
        ({"methods": ["lora_early_stop"]}, "needs eval_every"),
        ({"methods": ["lora"], "eval_every": 0}, "eval_every must be >= 1"),
        ({"methods": ["random"], "random_count": 2, "random_draws": 0}, "random_draws"),
        ({"methods": ["lora_late_stop"]}, "'lora_early_stop'"),
    ],
)
def test_bad_regime_options_are_clear_errors(hyper: dict[str, Any], message: str) -> None:
    spec = {"name": "lora_baselines", **hyper}
    with pytest.raises(ConfigError, match=message):
        optkit.get_registry().create("hyperoptimizer", spec)


@pytest.mark.parametrize(
    ("hyper", "message"),
    [
        ({"random_draws": 0}, "random_draws"),
        ({"eval_every": 0}, "eval_every"),
        ({"finetune_early_stop": True}, "finetune_early_stop needs eval_every"),
    ],
)
def test_flexora_regime_options_are_validated(hyper: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        optkit.get_registry().create("hyperoptimizer", {"name": "flexora", **hyper})


def test_flexora_random_control_draws_and_curves(tmp_path: Path) -> None:
    raw = tomllib.loads((TASKS / "flexora-us_debates-cpu.toml").read_text())
    raw["hyperoptimizer"].update(
        search_steps=1,
        random_control=True,
        random_draws=2,
        eval_every=1,
        top_k=4,
        finetune_early_stop=True,
        label="flexora_early_stop",
    )
    raw["hyperoptimizer"]["selection"] = "top_k"
    end, _rows = _end_row(raw, tmp_path)
    assert end["num_selected"] == 4
    assert len(end["random_layers"]) == len(end["random_d1_layers"]) == 4
    assert end["random_layers"] != end["random_d1_layers"]
    for prefix in ("", "random_", "random_d1_"):
        assert len(end[f"{prefix}test_loss_curve"]) == 2  # evaluated after steps 1 and 2
        assert end[f"{prefix}overfit_nats"] >= 0.0
        # finetune_early_stop: reported at the checkpoint with the lowest validation loss
        val, test = end[f"{prefix}val_loss_curve"], end[f"{prefix}test_loss_curve"]
        best = min(range(len(val)), key=lambda i: (val[i], i))
        assert end[f"{prefix}test_loss"] == pytest.approx(test[best])
        assert end[f"{prefix}best_val_step"] == end[f"{prefix}eval_steps"][best]
    assert end["best_score"] == pytest.approx(min(end["val_loss_curve"]))
    rows = study_rows([tmp_path], "regime")
    assert [(r["method"], r["draw"]) for r in rows] == [
        ("flexora_early_stop", 0),
        ("random[flexora_early_stop]", 0),
        ("random[flexora_early_stop]", 1),
    ]
    assert rows[0]["search_s"] > 0 and {r["layers_trained"] for r in rows} == {4}


def test_paired_differences_average_draws_within_a_seed_and_pair_by_seed() -> None:
    def row(method: str, seed: int, loss: float, draw: int = 0) -> dict[str, Any]:
        return {"task": "t", "method": method, "seed": seed, "draw": draw, "test_log_loss": loss}

    rows = [row("flexora", s, 0.5 + 0.01 * s) for s in range(4)]
    rows += [row("random", s, 0.6 + 0.01 * s, d) for s in range(4) for d in (0, 1)]
    rows += [row("random", 3, 0.9, 2), row("random", 9, 0.1)]  # an odd draw; an unpaired seed
    interval, pairs = paired_differences(rows, "flexora", "random")["t"]
    assert pairs == 4
    expected = (0.1 * 3 + (0.63 + 0.63 + 0.9) / 3 - 0.53) / 4  # seed 3's random: mean of 3 draws
    assert interval.mean == pytest.approx(expected)
    assert interval.ci_low is not None and interval.ci_high is not None
    assert interval.ci_low <= interval.mean <= interval.ci_high


def test_split_seed_seed_gives_each_cell_seed_its_own_split() -> None:
    spec = {"name": "us_debates", "train_size": 8, "val_size": 2, "test_size": 6}

    def test_split(objective: Any) -> list[list[int]]:
        return [t.flatten().tolist() for _, t in sorted(objective.data["test"].items())]

    made = {
        s: seeded_objective(text_cell_context({**spec, "split_seed": "seed"}, s), {})
        for s in (0, 1)
    }
    fixed = seeded_objective(text_cell_context({**spec, "split_seed": 1}, 0), {})
    assert made[0].split_seed == 0 and made[1].split_seed == 1
    assert test_split(made[1]) == test_split(fixed) != test_split(made[0])
    plain = optkit.get_registry().create("objective", {**spec, "split_seed": "seed"})
    with pytest.raises(ConfigError, match="split_seed = 'seed' is resolved by the flexora"):
        plain.prepare(torch.device("cpu"), torch.float32)


def test_rows_read_a_wrappers_learning_rate_and_name_a_flexora_label() -> None:
    end = {
        "event": "end",
        "hyperoptimizer": "flexora",
        "label": "flexora_early_stop:optex",
        "objective": "us_debates",
        "seed": 3,
        "test_loss": 0.6,
        "test_accuracy": 0.7,
        "random_test_loss": 0.65,
        "random_test_accuracy": 0.6,
        "optimizer_spec": {"name": "optex", "base_config": {"lr": 0.004}, "parallelism": 4},
    }
    rows = rows_from_end(end, "regime")
    assert [(r["method"], r["lr"], r["test_log_loss"]) for r in rows] == [
        ("flexora_early_stop", 0.004, 0.6),
        ("random[flexora_early_stop]", 0.004, 0.65),
    ]
