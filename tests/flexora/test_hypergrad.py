"""Hypergradients on a tiny real GPT-2 (float64): exact unrolled vs. central differences, DARTS'
approximation vs. the exact one-step SGD hypergradient, differentiable updates vs. torch.optim."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from optkit_flexora import hypergrad
from optkit_flexora.gates import LayerGates, gate_values
from optkit_flexora.layers import discover_layers

import optkit
from optkit.errors import ConfigError

from .helpers import lm_loss, lora_params, text_batches, tiny_lora

pytestmark = pytest.mark.nlp


def _setup() -> tuple[Any, Any, dict[str, torch.Tensor]]:
    model = tiny_lora(layers=3, arch="gpt2")
    gates = LayerGates(model, discover_layers(model))

    def gated(params: Any, g: torch.Tensor, batch: Any) -> torch.Tensor:
        with gates.applied(g):
            return lm_loss(model, params, batch)

    return model, gated, lora_params(model)


def _optimizer(spec: dict[str, Any], params: dict[str, torch.Tensor]) -> tuple[Any, Any]:
    """An optkit optimizer and its state after two real updates (moments are non-trivial)."""
    opt = optkit.get_registry().create("optimizer", spec)
    state = opt.init(params)
    gen = torch.Generator().manual_seed(5)
    p = params
    for _ in range(2):
        grads = {k: 0.01 * torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in p.items()}
        p, state = opt.update(p, grads, state)
    return opt, state


def _value_after_unroll(
    gated: Any,
    params: Any,
    a: torch.Tensor,
    batches: Any,
    val: Any,
    update: hypergrad.DifferentiableUpdate,
) -> float:
    gates = gate_values(a)
    theta = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    step = update.start()
    for batch in batches:
        grads = torch.autograd.grad(gated(theta, gates, batch), list(theta.values()))
        theta = {
            k: v.detach().requires_grad_(True)
            for k, v in step(theta, dict(zip(theta, grads, strict=True))).items()
        }
    with torch.no_grad():
        return float(gated(theta, gates, val))


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "adamw", "lr": 0.05, "weight_decay": 0.1},
        {"name": "sgd", "lr": 0.5, "momentum": 0.9},
    ],
)
def test_unrolled_matches_finite_differences(spec: dict[str, Any]) -> None:
    _, gated, params = _setup()
    opt, state = _optimizer(spec, params)
    update = hypergrad.DifferentiableUpdate(opt, state)
    batches, val = text_batches(2), text_batches(1, offset=3)[0]
    a = torch.tensor([0.2, -0.1, 0.05], dtype=torch.float64)
    exact = hypergrad.unrolled(gated, gated, params, a, batches, val, update).grad
    h = 1e-5
    numeric = torch.zeros(3, dtype=torch.float64)
    for i in range(3):
        e = torch.zeros(3, dtype=torch.float64)
        e[i] = h
        numeric[i] = (
            _value_after_unroll(gated, params, a + e, batches, val, update)
            - _value_after_unroll(gated, params, a - e, batches, val, update)
        ) / (2 * h)
    assert float(exact.abs().max()) > 1e-4
    torch.testing.assert_close(exact, numeric, rtol=1e-4, atol=1e-8)
    # the second-order term matters: first-order differs from the exact hypergradient
    first = hypergrad.first_order(gated, params, a, val).grad
    assert not torch.allclose(first, exact, rtol=1e-3)


def test_finite_difference_approximates_one_sgd_step() -> None:
    _, gated, params = _setup()
    xi = 0.5
    opt = optkit.get_registry().create("optimizer", {"name": "sgd", "lr": xi})
    update = hypergrad.DifferentiableUpdate(opt, opt.init(params))
    train, val = text_batches(1)[0], text_batches(1, offset=3)[0]
    a = torch.tensor([0.2, -0.1, 0.05], dtype=torch.float64)
    exact = hypergrad.unrolled(gated, gated, params, a, [train], val, update).grad
    approx = hypergrad.finite_difference(gated, gated, params, a, train, val, xi, 1e-4).grad
    torch.testing.assert_close(approx, exact, rtol=2e-3, atol=1e-7)


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "adam", "lr": 0.01},
        {"name": "adamw", "lr": 0.01, "weight_decay": 0.1},
        {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True},
    ],
)
def test_differentiable_update_equals_the_optimizers_update(spec: dict[str, Any]) -> None:
    params = lora_params(tiny_lora(layers=2))
    opt, state = _optimizer(spec, params)
    grads = {k: 0.02 * torch.ones_like(v) for k, v in params.items()}
    step = hypergrad.DifferentiableUpdate(opt, state).start()
    ours = step(params, grads)
    theirs, _ = opt.update(params, grads, opt.clone_state(state))
    for key in params:
        torch.testing.assert_close(ours[key], theirs[key])


def test_unrolled_refuses_optimizers_without_a_differentiable_update() -> None:
    params = lora_params(tiny_lora(layers=2))
    opt = optkit.get_registry().create("optimizer", {"name": "rmsprop"})
    with pytest.raises(ConfigError, match="supports sgd, adam and adamw, not 'rmsprop'"):
        hypergrad.DifferentiableUpdate(opt, opt.init(params))
