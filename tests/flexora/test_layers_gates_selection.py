"""Layer discovery (Llama, GPT-2, BERT), gates scaling LoRA deltas exactly once, selection."""

from __future__ import annotations

import pytest
import torch
from optkit_flexora.gates import LayerGates, gate_values
from optkit_flexora.layers import discover_layers
from optkit_flexora.selection import select_layers

from optkit.errors import ConfigError, DivergenceError

from .helpers import tiny_llama, tiny_lora

pytestmark = pytest.mark.nlp


def test_discovers_llama_gpt2_bert_layers() -> None:
    from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

    llama = discover_layers(tiny_llama(layers=3))
    assert (llama.path, llama.pattern, llama.count) == ("model.layers", "layers", 3)
    gpt2 = discover_layers(
        GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=32))
    )
    assert (gpt2.path, gpt2.pattern, gpt2.count) == ("transformer.h", "h", 2)
    bert = discover_layers(
        BertModel(
            BertConfig(
                num_hidden_layers=4,
                hidden_size=32,
                num_attention_heads=2,
                intermediate_size=64,
                vocab_size=64,
            )
        )
    )
    assert (bert.path, bert.pattern, bert.count) == ("encoder.layer", "layer", 4)


def test_discovery_through_peft_and_index_of() -> None:
    model = tiny_lora(layers=3)
    stack = discover_layers(model)
    assert stack.path == "model.layers" and stack.count == 3
    assert stack.index_of("base_model.model.model.layers.2.self_attn.q_proj") == 2
    assert stack.index_of("base_model.model.model.embed_tokens") is None


def test_no_layers_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="no transformer layers found in Sequential"):
        discover_layers(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()))


def test_gate_scales_each_lora_delta_exactly_once() -> None:
    model = tiny_lora(layers=3)
    stack = discover_layers(model)
    gates = LayerGates(model, stack)
    assert gates.modules_per_layer == [2, 2, 2]  # q_proj and v_proj in every layer
    q1 = model.get_submodule("base_model.model.model.layers.1.self_attn.q_proj")
    x = torch.randn(5, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        base = q1.base_layer(x)
        delta = q1.lora_B["default"](q1.lora_A["default"](x)) * q1.scaling["default"]
        assert float(delta.abs().max()) > 1e-3
        plain = q1(x)
        for value in (0.0, 0.5, 2.5):
            g = torch.ones(3, dtype=torch.float64)
            g[1] = value
            with gates.applied(g):
                gated = q1(x)
            torch.testing.assert_close(gated, base + value * delta)
    torch.testing.assert_close(plain, base + delta)
    gates.remove()
    with torch.no_grad():
        torch.testing.assert_close(q1(x), plain)


def test_gates_are_differentiable_and_start_at_one() -> None:
    logits = torch.zeros(4, requires_grad=True)
    g = gate_values(logits)
    torch.testing.assert_close(g, torch.ones(4))
    (g * torch.arange(4.0)).sum().backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) > 0


def test_gates_refuse_dora() -> None:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        tiny_llama(layers=2), LoraConfig(r=2, target_modules=["q_proj"], use_dora=True)
    )
    with pytest.raises(ConfigError, match="vanilla LoRA"):
        LayerGates(model, discover_layers(model))


def test_selection_rules() -> None:
    a = torch.tensor([0.3, -0.2, 0.05, -1.0, 0.1])
    assert select_layers(a, "positive_logit").layers == [0, 2, 4]
    gates = gate_values(a)
    assert select_layers(a, "gate_above_one").layers == [i for i in range(5) if gates[i] > 1]
    assert (
        select_layers(a - 5.0, "gate_above_one").layers == select_layers(a, "gate_above_one").layers
    )
    assert select_layers(a, "top_k", top_k=2).layers == [0, 4]
    empty = select_layers(torch.tensor([-0.5, -0.1, -0.3]), "positive_logit")
    assert empty.layers == [1] and empty.fallback


def test_selection_errors() -> None:
    a = torch.zeros(4)
    with pytest.raises(ConfigError, match="top_k = 5 must be between 1 and the number of layers"):
        select_layers(a, "top_k", top_k=5)
    with pytest.raises(ConfigError, match="needs top_k"):
        select_layers(a, "top_k")
    with pytest.raises(DivergenceError, match="not finite"):
        select_layers(torch.tensor([0.1, float("nan")]), "positive_logit")


def test_non_finite_gate_steps_raise_divergence() -> None:
    from optkit_flexora.flexora import gate_step

    logits = torch.zeros(3, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.01)
    gate_step(logits, torch.tensor([0.1, -0.2, 0.3]), opt, 0, "first_order")
    assert float(logits[0]) < 0 < float(logits[1])  # a descent step on the logits
    with pytest.raises(DivergenceError, match="non-finite gate hypergradient at search step 1"):
        gate_step(logits, torch.tensor([0.1, float("nan"), 0.3]), opt, 1, "unrolled")
    huge = torch.optim.SGD([logits], lr=1e38)
    with pytest.raises(DivergenceError, match="gate logits became non-finite at search step 2"):
        gate_step(logits, torch.tensor([1e5, -1e5, 0.0]), huge, 2, "first_order")
