"""Flexora and a LoRA baseline under [tuning] on the real SmolLM2-135M (CPU, tiny sizes): each
hyperoptimizer label's fine-tune learning rate tuned the same way, a trial being one whole cell
(Flexora: search and fine-tune), then measured with its choice. Against the refusal of
[tuning] next to hyperoptimizers that existed before, the run itself fails."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

import optkit
from optkit.errors import ConfigError
from optkit.results import load_rows
from optkit.tasks import check_task, load_task

pytestmark = pytest.mark.nlp

TASKS = Path(__file__).resolve().parents[2] / "tasks"
LABELS = ("flexora:adamw", "lora:adamw")


def tiny_task() -> dict[str, Any]:
    """tasks/compare-flexora-us_debates-cpu.toml cut to two labels and one step each."""
    raw = tomllib.loads((TASKS / "compare-flexora-us_debates-cpu.toml").read_text())
    raw["budget"] = {"iterations": 1}
    raw["objective"].update(train_size=8, val_size=2, test_size=2, eval_batch_size=2)
    flexora, lora = raw["hyperoptimizers"][:2]
    flexora.update(search_steps=1, finetune_steps=1)
    lora.update(finetune_steps=1)
    raw["hyperoptimizers"] = [flexora, lora]
    return raw


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("flexora-tuned") / "run"
    summary = optkit.run(tiny_task(), out=out)
    assert not summary.cells_failed and not summary.cells_skipped
    return out


def test_every_label_is_tuned_the_same_way_and_measured_with_its_choice(run_dir: Path) -> None:
    rows = load_rows(run_dir)
    tuning_rows = [r for r in rows if r["phase"] == "tuning"]
    trials = {
        label: [r for r in tuning_rows if r["event"] == "trial" and r["label"] == label]
        for label in LABELS
    }
    assert {label: [r["trial"] for r in mine] for label, mine in trials.items()} == {
        label: [0, 1] for label in LABELS
    }
    assert all(r["status"] == "ok" and r["tuning_seeds"] == [1000] for r in tuning_rows)
    # the same learning rates, in the same order, for both labels
    assert [r["trial_config"] for r in trials[LABELS[0]]] == [
        r["trial_config"] for r in trials[LABELS[1]]
    ]
    # a trial is a whole cell: Flexora's trial rows carry its search's and fine-tune's numbers
    assert all(r["num_layers"] == 30 and r["search_steps"] == 1 for r in trials[LABELS[0]])
    assert all(r["score"] == pytest.approx(r["val_loss"]) for r in trials[LABELS[0]])
    assert all(r["score"] == pytest.approx(r["lora_val_loss"]) for r in trials[LABELS[1]])

    record = json.loads((run_dir / "tuning.json").read_text())["objectives"]["us_debates"]
    assert {k: (v["hyperoptimizer"], v["optimizer"]) for k, v in record.items()} == {
        "flexora:adamw": ("flexora", "adamw"),
        "lora:adamw": ("lora", "adamw"),
    }
    measured = [r for r in rows if r["phase"] == "measure" and r["event"] == "end"]
    assert sorted(r["label"] for r in measured) == sorted(LABELS)
    for end in measured:
        chosen = record[end["label"]]["chosen"]["lr"]
        assert end["status"] == "ok" and end["seed"] == 0
        assert end["optimizer_spec"] == {"name": "adamw", "lr": chosen}
        best = min(t["score"] for t in record[end["label"]]["trials"])
        assert record[end["label"]]["score"] == best


def test_a_finished_run_resumes_without_running_anything(run_dir: Path) -> None:
    before = (run_dir / "results.jsonl").read_text()
    summary = optkit.run(tiny_task(), out=run_dir, resume=True)
    assert summary.cells_run == 0 and (run_dir / "results.jsonl").read_text() == before


def test_a_score_the_cells_do_not_report_is_a_check_error() -> None:
    raw = tiny_task()
    raw["tuning"]["score"] = "val_loss"
    with pytest.raises(ConfigError) as err:
        check_task(load_task(raw))
    message = str(err.value)
    assert "'tuning.score' = 'val_loss'" in message and "hyperoptimizer 'flexora'" in message
    assert "Valid: best_score" in message
