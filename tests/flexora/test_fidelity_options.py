"""Flexora's fidelity options (issue 17, point 1): gate power and form, search length in steps or
epochs, the validation batch, the search loss; bad values are ConfigErrors before anything runs.

Gate tests use a tiny real Llama (random init); the loss and the errors use the real SmolLM2
objective (the errors need no model load: they come from ``optkit check``'s path)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import torch
from optkit_flexora.flexora import Flexora
from optkit_flexora.gates import LayerGates, gate_scales, gate_values
from optkit_flexora.layers import discover_layers
from optkit_flexora.selection import select_layers

import optkit
from optkit.errors import ConfigError
from optkit.tasks import check_task, load_task

from .helpers import tiny_lora

pytestmark = pytest.mark.nlp

TASKS = Path(__file__).resolve().parents[2] / "tasks"


def _flexora(**config: Any) -> Any:
    return optkit.get_registry().create("hyperoptimizer", {"name": "flexora", **config})


def _task(**hyper: Any) -> dict[str, Any]:
    raw = tomllib.loads((TASKS / "flexora-us_debates-cpu.toml").read_text())
    raw["hyperoptimizer"].update(hyper)
    return raw


# ---------------------------------------------------------------- gate form and power


def test_sigmoid_gates_are_independent_and_start_at_one() -> None:
    a = torch.zeros(4)
    torch.testing.assert_close(gate_values(a, "sigmoid"), torch.ones(4))
    b = torch.tensor([0.0, 2.0, 0.0, 0.0])
    # softmax couples the layers (raising a_1 lowers the others); sigmoids do not
    assert float(gate_values(b, "softmax")[0]) < 1.0
    assert float(gate_values(b, "sigmoid")[0]) == pytest.approx(1.0)
    assert float(gate_values(b, "sigmoid")[1]) == pytest.approx(
        2 * torch.sigmoid(torch.tensor(2.0))
    )
    # gate_above_one with sigmoids is a_i > 0
    c = torch.tensor([0.3, -0.2, 0.05, -1.0])
    assert select_layers(c, "gate_above_one", form="sigmoid").layers == [0, 2]


def _release_style_hooks(model: Any, gates: torch.Tensor) -> list[Any]:
    """The released code's gating: forward pre-hooks multiplying the inputs of lora_dropout,
    lora_A and lora_B of layer i by gate_i (so the delta is scaled by gate_i cubed)."""
    stack = discover_layers(model)
    handles = []
    for name, module in model.named_modules():
        if not hasattr(module, "lora_B") or "default" not in module.lora_B:
            continue
        i = stack.index_of(name)
        assert i is not None

        def pre(mod: Any, args: Any, i: int = i) -> Any:
            return (args[0] * gates[i],)

        for sub in (module.lora_dropout, module.lora_A, module.lora_B):
            handles.append(sub["default"].register_forward_pre_hook(pre))
    return handles


def test_gate_power_three_matches_the_released_triple_scaling() -> None:
    model = tiny_lora(layers=3)
    stack = discover_layers(model)
    logits = torch.tensor([0.4, -0.3, 0.1], dtype=torch.float64)
    ids = torch.tensor([[5, 17, 99, 3, 42, 7]])
    handles = _release_style_hooks(model, gate_values(logits))
    with torch.no_grad():
        released = model(ids).logits
    for h in handles:
        h.remove()
    gates = LayerGates(model, stack)
    with torch.no_grad(), gates.applied(gate_scales("softmax", 3)(logits)):
        ours = model(ids).logits
    with torch.no_grad(), gates.applied(gate_scales("softmax", 1)(logits)):
        once = model(ids).logits
    gates.remove()
    torch.testing.assert_close(ours, released)
    assert float((once - released).abs().max()) > 1e-6  # power 1 is a different model


def test_search_hypergradient_with_power_three_is_the_released_one() -> None:
    """d val / d a through our single hook with gate_power = 3 equals d val / d a through the
    released three pre-hooks (gates L softmax(a) inside the graph)."""
    from optkit_flexora import hypergrad

    from .helpers import lm_loss, lora_params, text_batches

    model = tiny_lora(layers=3)
    params = lora_params(model)
    batch = text_batches(1, length=12, batch=2)[0]
    logits = torch.tensor([0.2, -0.1, 0.05], dtype=torch.float64)
    a = logits.clone().requires_grad_(True)
    handles = _release_style_hooks(model, gate_values(a))
    (released,) = torch.autograd.grad(lm_loss(model, params, batch), a)
    for h in handles:
        h.remove()
    gates = LayerGates(model, discover_layers(model))

    def gated(p: Any, g: torch.Tensor, b: Any) -> torch.Tensor:
        with gates.applied(g):
            return lm_loss(model, p, b)

    ours = hypergrad.first_order(gated, params, logits, batch, gate_scales("softmax", 3))
    once = hypergrad.first_order(gated, params, logits, batch)
    gates.remove()
    torch.testing.assert_close(ours.grad, released)
    assert float((once.grad - released).abs().max()) > 1e-8


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"gate_power": 2}, r"gate_power = 2 is not documented; valid: 1 .* or 3"),
        ({"gate_form": "tanh"}, r"gate_form' .* must be 'softmax' \| 'sigmoid'"),
        ({"search_steps": 0}, "search budget of zero"),
        ({"search_epochs": 0}, "search budget of zero"),
        ({"search_steps": 4, "search_epochs": 1.0}, "search_steps or search_epochs, not both"),
        ({"val_batch_size": 0}, "val_batch_size must be >= 1"),
        ({"loss": "mse"}, r"key 'loss' .* must be 'answer_ce' \| 'token_nll'"),
        ({"selection_checkpoints": [0, 2]}, "selection_checkpoints must be a non-empty list"),
    ],
)
def test_bad_options_are_config_errors(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _flexora(**config)


def test_direct_construction_checks_form_and_power_too() -> None:
    with pytest.raises(ConfigError, match="gate_form 'tanh' is not a documented gate form"):
        Flexora(gate_form="tanh")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="gate_power = True is not documented"):
        Flexora(gate_power=True)


def test_validation_split_too_small_for_the_batch_is_refused_before_running(
    tmp_path: Path,
) -> None:
    raw = _task(val_batch_size=8)  # val_size = 4
    with pytest.raises(ConfigError, match=r"validation split holds 4 example.*batch of 8"):
        check_task(load_task(raw))
    with pytest.raises(ConfigError, match="raise the objective's val_size to at least 8"):
        optkit.run(raw, out=tmp_path / "run")
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())
    check_task(load_task(_task(val_batch_size=4)))  # exactly the split: fine


def test_checkpoints_beyond_the_search_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"selection_checkpoints \[1, 3\] go beyond .* 2 steps"):
        check_task(load_task(_task(selection_checkpoints=[1, 3])))


def test_search_length_in_epochs() -> None:
    hyper = _flexora(search_epochs=1.5)
    assert hyper.resolved_steps(train_size=16, batch_size=2) == 12
    assert _flexora(search_epochs=0.01).resolved_steps(16, 2) == 1  # never zero
    assert _flexora().resolved_steps(16, 2) == 100
    assert _flexora(search_steps=7).resolved_steps(16, 2) == 7


# ---------------------------------------------------------------- losses on the real model


def _objective(**config: Any) -> Any:
    spec = {
        "name": "us_debates",
        "train_size": 4,
        "val_size": 3,
        "test_size": 1,
        "max_length": 32,
        **config,
    }
    obj = optkit.get_registry().create("objective", spec)
    obj.prepare(torch.device("cpu"), torch.float32)
    return obj


def _multi_token_batch(obj: Any) -> dict[str, torch.Tensor]:
    """Three real debate statements with answers of different token counts (the dataset's own
    options, " Republican" / " Democratic", are one token each in SmolLM2)."""
    from optkit_nlp.lm_tasks import encode
    from optkit_nlp.models import load_causal_lm
    from optkit_nlp.text_data import Choice, load_task

    _, tokenizer = load_causal_lm("smollm2-135m")
    options = (" the Republican Party", " Democrats")
    examples = [Choice(c.prompt, options, c.label) for c in load_task("us_debates")[:3]]
    examples[0] = Choice(examples[0].prompt, options, 0)
    examples[1] = Choice(examples[1].prompt, options, 1)
    return encode(examples, tokenizer, 32)


def test_token_nll_is_the_sft_loss_over_the_answer_tokens() -> None:
    """token_nll equals transformers' own causal-LM loss with the prompt masked (-100), the
    loss LLaMA-Factory (and so the released Flexora) trains on: answer tokens of the whole
    batch averaged together."""
    obj = _objective(train_loss="token_nll", layers=[0])
    params = obj.init_params(torch.Generator())
    batch = _multi_token_batch(obj)
    ours = float(obj.loss(params, batch))
    rows = torch.arange(3)
    ids = batch["input_ids"][rows, batch["label"]]  # (B, T): the correct option's sequence
    k = batch["option_mask"].shape[-1] + 1
    answer = torch.zeros_like(ids, dtype=torch.bool)
    answer[:, ids.shape[1] - (k - 1) :] = batch["option_mask"][rows, batch["label"]] > 0
    labels = ids.masked_fill(~answer, -100)
    with torch.no_grad():
        reference = obj.model(
            input_ids=ids,
            attention_mask=batch["attention_mask"][rows, batch["label"]],
            position_ids=batch["position_ids"][rows, batch["label"]],
            labels=labels,
        ).loss
    assert ours == pytest.approx(float(reference), rel=1e-4)
    # the answers differ in token count, so the per-example mean (answer_nll) is another number
    counts = batch["option_mask"][rows, batch["label"]].sum(-1)
    assert len(set(counts.tolist())) > 1
    obj.train_loss = "answer_nll"
    assert float(obj.loss(params, batch)) != pytest.approx(ours, rel=1e-3)


def test_validation_batch_size() -> None:
    obj = _objective(batch_size=1)
    gen = torch.Generator().manual_seed(0)
    assert obj.sample_split_batch("validation", gen)["label"].shape == (1,)
    assert obj.sample_split_batch("validation", gen, 3)["label"].shape == (3,)
