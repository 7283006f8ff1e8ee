"""Flexora (Wei et al., arXiv 2408.10774): choose the layers that get LoRA, then fine-tune them.

One :meth:`Flexora.optimize` call runs the three stages on the task's objective (a LoRA text
objective of :mod:`optkit_nlp.lm_tasks`) with the task's inner optimizer:

1. **Search.** LoRA on every layer, gate_i = L softmax(a)_i on layer i's LoRA delta, a = 0.
   Each search step is one inner-optimizer step on a training batch (gates fixed) followed by
   one Adam step on a from a hypergradient on a validation batch (``first_order`` /
   ``unrolled`` / ``finite_difference``, see :mod:`optkit_flexora.hypergrad`).
2. **Selection** of layers from a (:mod:`optkit_flexora.selection`).
3. **Fine-tune** a fresh LoRA on the selected layers only (PEFT ``layers_to_transform``) for
   ``finetune_steps`` iterations, then test accuracy.

Optionally (``random_control``) the same fine-tune on as many random layers (seeded).
"""

from __future__ import annotations

import gc
import time
from typing import Any, ClassVar, Literal

import torch

from optkit.errors import ConfigError, DivergenceError
from optkit.interfaces import (
    HyperContext,
    HyperOptimizer,
    HyperResult,
    Objective,
    Optimizer,
    Support,
)
from optkit.oracle import Oracle
from optkit_flexora import hypergrad
from optkit_flexora.finetune import run_finetune, serial_executor
from optkit_flexora.gates import LayerGates, gate_values
from optkit_flexora.selection import check_top_k, select_layers


def gate_step(
    logits: torch.Tensor, grad: torch.Tensor, optimizer: torch.optim.Optimizer, step: int, mode: str
) -> None:
    """One optimizer step on the gate logits (shape ``(L,)``) with hypergradient ``grad``.

    Raises:
        DivergenceError: ``grad`` or the updated logits are not finite (the runner records the
            cell as diverged).
    """
    if not bool(torch.isfinite(grad).all()):
        raise DivergenceError(
            f"flexora: non-finite gate hypergradient at search step {step} ({mode}):"
            f" {grad.tolist()}"
        )
    optimizer.zero_grad()
    logits.grad = grad.detach().to(logits.dtype)
    optimizer.step()
    if not bool(torch.isfinite(logits).all()):
        raise DivergenceError(f"flexora: gate logits became non-finite at search step {step}")


def release_memory(device: torch.device) -> None:
    """Collect the previous stage's model so that the next stage's peak memory (reset at its
    start) does not include it, and hand cached CUDA blocks back to other processes."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class Flexora(HyperOptimizer):
    """Flexora's three stages (search with gates, selection, fine-tune) in one call; see the
    module docstring and ``docs/flexora.md``."""

    name: ClassVar[str] = "flexora"
    summary: ClassVar[str] = (
        "Flexora: LoRA layer selection by unrolled-differentiation HPO, then a LoRA fine-tune"
    )

    def __init__(
        self,
        *,
        search_steps: int = 100,
        hypergradient: Literal["first_order", "unrolled", "finite_difference"] = "first_order",
        unroll_steps: int = 1,
        gate_lr: float = 0.01,
        selection: Literal["positive_logit", "top_k", "gate_above_one"] = "positive_logit",
        top_k: int | None = None,
        finetune_steps: int | None = None,
        fd_epsilon: float = 0.01,
        virtual_lr: float | None = None,
        random_control: bool = False,
    ) -> None:
        """Args:
        search_steps: alternating (LoRA step, gate step) pairs of stage 1.
        hypergradient: how the gate gradient is computed (module docstring of hypergrad).
        unroll_steps: K inner steps unrolled by ``unrolled``.
        gate_lr: Adam learning rate of the gate logits (released: 0.01).
        selection / top_k: the selection rule (top_k for ``top_k``).
        finetune_steps: iterations of the final fine-tune (default: budget.iterations).
        fd_epsilon / virtual_lr: DARTS' radius and virtual step xi (default: inner lr).
        random_control: also fine-tune as many random layers (seeded by the cell's seed).
        """
        if search_steps < 1:
            raise ConfigError(f"flexora: search_steps must be >= 1, got {search_steps}")
        if unroll_steps < 1:
            raise ConfigError(f"flexora: unroll_steps must be >= 1, got {unroll_steps}")
        if gate_lr <= 0:
            raise ConfigError(f"flexora: gate_lr must be > 0, got {gate_lr}")
        if finetune_steps is not None and finetune_steps < 1:
            raise ConfigError(f"flexora: finetune_steps must be >= 1, got {finetune_steps}")
        if selection == "top_k" and top_k is None:
            raise ConfigError("flexora: selection = 'top_k' needs top_k")
        self.search_steps = search_steps
        self.hypergradient = hypergradient
        self.unroll_steps = unroll_steps
        self.gate_lr = gate_lr
        self.selection = selection
        self.top_k = top_k
        self.finetune_steps = finetune_steps
        self.fd_epsilon = fd_epsilon
        self.virtual_lr = virtual_lr
        self.random_control = random_control

    def supports(self, objective: Objective, optimizer: Optimizer) -> Support:
        if not hasattr(objective, "sample_split_batch") or not hasattr(objective, "layers"):
            return Support.no(
                f"objective '{objective.name}' is not a LoRA text objective (optkit_nlp)"
            )
        return Support.yes()

    # ------------------------------------------------------------------ stages

    def optimize(self, context: HyperContext) -> HyperResult:
        spec_peft = context.objective_spec.get("peft", "lora")
        if spec_peft != "lora":
            raise ConfigError(
                f"flexora: the objective must use peft = 'lora' (got '{spec_peft}'):"
                " gates scale plain LoRA deltas and the fine-tune trains LoRA"
            )
        steps = self.finetune_steps or int(context.budget.get("iterations", 0))
        if steps < 1:
            raise ConfigError("flexora: set finetune_steps or budget.iterations (>= 1)")
        times: dict[str, float] = {}

        start = time.perf_counter()
        search = self._search(context)
        times["search_s"] = search["loop_s"]  # the alternating steps alone
        times["search_setup_s"] = time.perf_counter() - start - search["loop_s"]  # model load
        release_memory(context.device)  # the search model is gone: free it for the fine-tune

        start = time.perf_counter()
        chosen = select_layers(search["logits"], self.selection, self.top_k)
        times["selection_s"] = time.perf_counter() - start
        context.record(
            {
                "stage": "selection",
                "selected_layers": chosen.layers,
                "fallback": chosen.fallback,
                "rule": self.selection,
            }
        )

        final = self._finetune(context, chosen.layers, steps, "finetune")
        times["finetune_s"] = final.seconds
        extras: dict[str, Any] = {
            "selected_layers": chosen.layers,
            "selected_layers_str": ",".join(map(str, chosen.layers)),
            "num_selected": len(chosen.layers),
            "num_layers": search["num_layers"],
            "selection_fallback": chosen.fallback,
            "gates_per_step": search["gates"],
            "final_gates": search["gates"][-1],
            "final_logits": search["logits"].tolist(),
            "search_trainable_params": search["trainable_params"],
            "search_peak_memory_mb": search["peak_memory_mb"],
            "hypergradient": self.hypergradient,
            **times,
            **final.metrics(),
        }
        if self.random_control:
            release_memory(context.device)
            gen = torch.Generator().manual_seed(10_000 + context.seed)
            perm = torch.randperm(search["num_layers"], generator=gen)
            random_layers = sorted(int(i) for i in perm[: len(chosen.layers)])
            control = self._finetune(context, random_layers, steps, "random")
            extras.update(control.metrics(prefix="random_"))
            extras["random_layers"] = random_layers
        return HyperResult(
            best_config={"objective.layers": chosen.layers},
            best_score=final.val_loss,
            extras=extras,
        )

    def _search(self, context: HyperContext) -> dict[str, Any]:
        objective: Any = context.create_objective({"objective.layers": None})
        objective.prepare(context.device, context.dtype)
        if not hasattr(objective, "sample_split_batch"):
            raise ConfigError(
                f"flexora needs a LoRA text objective (optkit_nlp), got '{objective.name}'"
            )
        if objective.sizes["validation"] < 2:
            raise ConfigError(
                f"flexora: the validation split holds {objective.sizes['validation']} example(s);"
                " hold out at least 2 (objective val_size) for the gate steps"
            )
        if self.selection == "top_k":
            check_top_k(self.selection, self.top_k, objective.num_layers)
        device = context.device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        gates = LayerGates(objective.model, objective.layer_stack)
        try:
            return self._search_loop(context, objective, gates)
        finally:
            gates.remove()

    def _search_loop(
        self, context: HyperContext, objective: Any, gates: LayerGates
    ) -> dict[str, Any]:
        gen = context.generator
        optimizer = context.create_optimizer({})
        params = objective.init_params(gen)
        state = optimizer.init(params)
        update = None
        if self.hypergradient == "unrolled":
            update = hypergrad.DifferentiableUpdate(optimizer, state)
        xi = (
            self.virtual_lr
            if self.virtual_lr is not None
            else float(getattr(optimizer, "lr", 1e-4))
        )
        oracle = Oracle(objective, serial_executor(), gen)
        num_layers = objective.num_layers
        logits = torch.zeros(num_layers, device=context.device, requires_grad=True)
        gate_opt = torch.optim.Adam([logits], lr=self.gate_lr)

        def gated(params: Any, g: torch.Tensor, batch: Any) -> torch.Tensor:
            with gates.applied(g):
                return objective.loss(params, batch)

        history: list[list[float]] = []
        if context.device.type == "cuda":
            torch.cuda.synchronize(context.device)
        loop_start = time.perf_counter()
        for step in range(self.search_steps):
            gates.set(gate_values(logits.detach()))
            params, state, info = optimizer.step(params, state, oracle)
            gates.set(None)
            val_batch = objective.sample_split_batch("validation", gen)
            if self.hypergradient == "first_order":
                hg = hypergrad.first_order(gated, params, logits, val_batch)
            elif self.hypergradient == "unrolled":
                assert update is not None
                update.state = state
                batches = [
                    objective.sample_split_batch("train", gen) for _ in range(self.unroll_steps)
                ]
                hg = hypergrad.unrolled(gated, gated, params, logits, batches, val_batch, update)
            else:
                batch = objective.sample_split_batch("train", gen)
                hg = hypergrad.finite_difference(
                    gated, gated, params, logits, batch, val_batch, xi, self.fd_epsilon
                )
            gate_step(logits, hg.grad, gate_opt, step, self.hypergradient)
            values = gate_values(logits.detach()).tolist()
            history.append(values)
            context.record(
                {
                    "stage": "search",
                    "step": step,
                    "train_loss": info.loss,
                    "val_loss": hg.val_loss,
                    "gates": values,
                    "hypergrad_norm": float(hg.grad.norm()),
                }
            )
        if context.device.type == "cuda":
            torch.cuda.synchronize(context.device)
        loop_s = time.perf_counter() - loop_start
        peak = (
            torch.cuda.max_memory_allocated(context.device) / 2**20
            if context.device.type == "cuda"
            else 0.0
        )
        return {
            "loop_s": loop_s,
            "logits": logits.detach().cpu(),
            "gates": history,
            "num_layers": num_layers,
            "trainable_params": objective.trainable_parameter_count(),
            "peak_memory_mb": peak,
        }

    def _finetune(self, context: HyperContext, layers: list[int], steps: int, label: str) -> Any:
        objective = context.create_objective({"objective.layers": layers})
        objective.prepare(context.device, context.dtype)
        optimizer = context.create_optimizer({})
        gen = torch.Generator().manual_seed(context.seed)
        return run_finetune(objective, optimizer, steps, gen, context.record, label)
