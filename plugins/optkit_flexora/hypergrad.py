"""Hypergradients of the validation loss w.r.t. the gate logits a.

Notation: theta are the LoRA tensors (a params dict), g(a) the per-layer scales on the LoRA
deltas (``gate_fn``, default L * softmax(a); see :func:`optkit_flexora.gates.gate_scales`),
``train_loss(theta, g, batch)`` and ``val_loss(theta, g, batch)`` scalar losses.

* ``first_order`` (as released; DARTS' first-order mode): d/da val_loss(theta, g(a)) at the
  current theta, ignoring how theta depends on a.
* ``unrolled`` (exact): theta_K(a) = K steps of the inner optimizer's own update rule from the
  current theta and optimizer state, each step's gradient taken with ``create_graph=True``;
  returns d/da val_loss(theta_K(a), g(a)) by backpropagating through the K updates. The update
  is torch.optim's functional SGD / Adam / AdamW with ``differentiable=True`` (the very rule the
  inner optimizer applies), on copies of the state.
* ``finite_difference`` (DARTS' second-order approximation): with theta' = theta - xi grad
  train_loss, d/da val_loss(theta', g) - xi (d/da train_loss(theta+, g) - d/da
  train_loss(theta-, g)) / (2 r), theta+- = theta +- r dval/dtheta', r = eps / ||dval/dtheta'||.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim import adam as torch_adam
from torch.optim import adamw as torch_adamw
from torch.optim import sgd as torch_sgd

from optkit.errors import ConfigError
from optkit.interfaces import Batch, Optimizer, Params
from optkit_flexora.gates import GateFn, gate_values

GatedLoss = Callable[[Params, torch.Tensor, Batch], torch.Tensor]
"""``(theta, gates (L,), batch) -> 0-dim loss``."""


@dataclass
class Hypergradient:
    """``grad``: d val / d a, shape ``(L,)``; ``val_loss``: the validation loss it saw."""

    grad: torch.Tensor
    val_loss: float


def _leaf(params: Params) -> Params:
    return {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}


def first_order(
    val_loss: GatedLoss,
    params: Params,
    logits: torch.Tensor,
    val_batch: Batch,
    gate_fn: GateFn = gate_values,
) -> Hypergradient:
    a = logits.detach().clone().requires_grad_(True)
    theta = {k: v.detach() for k, v in params.items()}
    loss = val_loss(theta, gate_fn(a), val_batch)
    (grad,) = torch.autograd.grad(loss, a)
    return Hypergradient(grad, float(loss.detach()))


# ------------------------------------------------------------------ differentiable updates


class DifferentiableUpdate:
    """The inner optimizer's update rule on graph-carrying tensors.

    ``start()`` copies the optimizer state (moments, step counts) once per hypergradient;
    the returned ``step(theta, grads) -> theta`` keeps the autograd graph (theta and grads may
    depend on a).
    """

    def __init__(self, optimizer: Optimizer, state: Any) -> None:
        from optkit_baselines.torch_optim import SGD, Adam, AdamW, TorchOptimizer

        if not isinstance(optimizer, (SGD, Adam)) or not isinstance(optimizer, TorchOptimizer):
            raise ConfigError(
                f"hypergradient 'unrolled' differentiates through the inner optimizer's update;"
                f" it supports sgd, adam and adamw, not '{optimizer.name}'. Use"
                " hypergradient = 'first_order' or 'finite_difference' with this optimizer"
            )
        if getattr(optimizer, "amsgrad", False):
            raise ConfigError("hypergradient 'unrolled' does not support amsgrad = true")
        self.optimizer = optimizer
        self.kind = (
            "sgd"
            if isinstance(optimizer, SGD)
            else ("adamw" if isinstance(optimizer, AdamW) else "adam")
        )
        self.state = state

    def start(self) -> Callable[[Params, Params], Params]:
        opt: Any = self.optimizer
        slots = self.state.slots
        torch_state = self.state.optimizer.state
        keys = list(slots)
        if self.kind == "sgd":
            bufs: list[Any] = []
            for k in keys:
                buf = torch_state.get(slots[k], {}).get("momentum_buffer")
                if buf is None and opt.momentum != 0 and opt.dampening == 0:
                    buf = torch.zeros_like(slots[k])
                bufs.append(None if buf is None else buf.detach().clone())

            def sgd_step(theta: Params, grads: Params) -> Params:
                new = [theta[k].clone() for k in keys]
                torch_sgd.sgd(
                    new,
                    [grads[k] for k in keys],
                    bufs,
                    foreach=False,
                    weight_decay=opt.weight_decay,
                    momentum=opt.momentum,
                    lr=opt.lr,
                    dampening=opt.dampening,
                    nesterov=opt.nesterov,
                    maximize=False,
                )
                return dict(zip(keys, new, strict=True))

            return sgd_step
        exp_avg, exp_avg_sq, steps = [], [], []
        for k in keys:
            st = torch_state.get(slots[k], {})
            exp_avg.append(st["exp_avg"].detach().clone() if st else torch.zeros_like(slots[k]))
            # + the smallest normal float: d sqrt(v)/dv is infinite at v = 0, and where a
            # gradient underflows to exactly 0 (seen on MiniLM's head) inf x 0 made the
            # hypergradient NaN; the update itself moves by far less than eps.
            second = st["exp_avg_sq"].detach().clone() if st else torch.zeros_like(slots[k])
            exp_avg_sq.append(second.add_(torch.finfo(second.dtype).tiny))
            steps.append(st["step"].detach().clone().float() if st else torch.tensor(0.0))
        fn = torch_adamw.adamw if self.kind == "adamw" else torch_adam.adam

        def adam_step(theta: Params, grads: Params) -> Params:
            new = [theta[k].clone() for k in keys]
            fn(
                new,
                [grads[k] for k in keys],
                exp_avg,
                exp_avg_sq,
                [],
                steps,
                foreach=False,
                differentiable=True,
                amsgrad=False,
                beta1=opt.betas[0],
                beta2=opt.betas[1],
                lr=opt.lr,
                weight_decay=opt.weight_decay,
                eps=opt.eps,
                maximize=False,
            )
            return dict(zip(keys, new, strict=True))

        return adam_step


def unrolled(
    train_loss: GatedLoss,
    val_loss: GatedLoss,
    params: Params,
    logits: torch.Tensor,
    train_batches: Sequence[Batch],
    val_batch: Batch,
    update: DifferentiableUpdate,
    gate_fn: GateFn = gate_values,
) -> Hypergradient:
    """Exact hypergradient through ``len(train_batches)`` unrolled inner steps."""
    a = logits.detach().clone().requires_grad_(True)
    gates = gate_fn(a)
    theta = _leaf(params)
    step = update.start()
    for batch in train_batches:
        loss = train_loss(theta, gates, batch)
        grads = torch.autograd.grad(loss, list(theta.values()), create_graph=True)
        theta = step(theta, dict(zip(theta, grads, strict=True)))
    val = val_loss(theta, gates, val_batch)
    (grad,) = torch.autograd.grad(val, a)
    return Hypergradient(grad, float(val.detach()))


def finite_difference(
    train_loss: GatedLoss,
    val_loss: GatedLoss,
    params: Params,
    logits: torch.Tensor,
    train_batch: Batch,
    val_batch: Batch,
    xi: float,
    epsilon: float = 0.01,
    gate_fn: GateFn = gate_values,
) -> Hypergradient:
    """DARTS' second-order approximation with virtual SGD step ``xi`` and radius ``epsilon``."""
    a = logits.detach().clone().requires_grad_(True)
    theta = _leaf(params)
    fixed = gate_fn(a.detach())
    grads = torch.autograd.grad(train_loss(theta, fixed, train_batch), list(theta.values()))
    virtual = {
        k: (v - xi * g).detach().requires_grad_(True)
        for (k, v), g in zip(theta.items(), grads, strict=True)
    }
    val = val_loss(virtual, gate_fn(a), val_batch)
    *d_theta, d_a = torch.autograd.grad(val, [*virtual.values(), a])
    norm = torch.sqrt(torch.stack([(d * d).sum() for d in d_theta]).sum())
    r = epsilon / float(norm.clamp(min=1e-12))

    def grad_a(sign: float) -> torch.Tensor:
        shifted = {
            k: (v + sign * r * d).detach() for (k, v), d in zip(theta.items(), d_theta, strict=True)
        }
        aa = a.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(train_loss(shifted, gate_fn(aa), train_batch), aa)
        return g

    second = (grad_a(1.0) - grad_a(-1.0)) / (2 * r)
    return Hypergradient(d_a - xi * second, float(val.detach()))
