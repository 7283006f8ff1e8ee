"""Flexora (Wei et al., arXiv 2408.10774): choose the layers that get LoRA, then fine-tune them.

One :meth:`Flexora.optimize` call runs the three stages on the task's objective (a LoRA text
objective of :mod:`optkit_nlp.lm_tasks`) with the task's inner optimizer:

1. **Search.** LoRA on every layer, a gate per layer on its LoRA delta (``gate_form``:
   L softmax(a)_i as released, or 2 sigmoid(a_i); raised to ``gate_power``: 1, or 3 as
   released), a = 0. Each search step (``search_steps``, or ``search_epochs`` over the training
   split) is one inner-optimizer step on a training batch (gates fixed) followed by one Adam
   step on a from a hypergradient on a validation batch of ``val_batch_size`` examples
   (``first_order`` / ``unrolled`` / ``finite_difference``, see
   :mod:`optkit_flexora.hypergrad`), both with the search ``loss`` (``answer_ce`` /
   ``token_nll``). The selection after each of ``selection_checkpoints`` steps and, with
   ``layer_ablation``, the loss change of zeroing each layer's delta are recorded
   (:mod:`optkit_flexora.stability`).
2. **Selection** of layers from a (:mod:`optkit_flexora.selection`).
3. **Fine-tune** a fresh LoRA on the selected layers only (PEFT ``layers_to_transform``) for
   ``finetune_steps`` iterations, then test accuracy.

Optionally (``random_control``) the same fine-tune on as many random layers (seeded).
"""

from __future__ import annotations

import gc
import math
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
from optkit_flexora import hypergrad, stability
from optkit_flexora.finetune import (
    FinetuneResult,
    lora_text_support,
    run_finetune,
    seeded_objective,
    serial_executor,
)
from optkit_flexora.gates import LayerGates, check_gate_options, gate_scales, gate_values
from optkit_flexora.selection import check_top_k, select_layers

SEARCH_LOSSES: dict[str, str] = {"answer_ce": "choice_ce", "token_nll": "token_nll"}
"""Flexora's ``loss`` -> the objective's ``train_loss`` used during the search."""
DEFAULT_SEARCH_STEPS = 100


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
        search_steps: int | None = None,
        search_epochs: float | None = None,
        val_batch_size: int | None = None,
        gate_form: Literal["softmax", "sigmoid"] = "softmax",
        gate_power: int = 1,
        loss: Literal["answer_ce", "token_nll"] | None = None,
        selection_checkpoints: list[int] | None = None,
        layer_ablation: bool = False,
        hypergradient: Literal["first_order", "unrolled", "finite_difference"] = "first_order",
        unroll_steps: int = 1,
        gate_lr: float = 0.01,
        selection: Literal["positive_logit", "top_k", "gate_above_one"] = "positive_logit",
        top_k: int | None = None,
        finetune_steps: int | None = None,
        fd_epsilon: float = 0.01,
        virtual_lr: float | None = None,
        random_control: bool = False,
        random_draws: int = 1,
        eval_every: int | None = None,
        finetune_early_stop: bool = False,
    ) -> None:
        """Args:
        search_steps: alternating (LoRA step, gate step) pairs of stage 1 (default 100 when
            ``search_epochs`` is not given either).
        search_epochs: the search length in passes over the training split instead:
            ceil(search_epochs x train_size / batch_size) steps (released: 1 epoch).
        val_batch_size: validation examples per gate step (default: the objective's
            batch_size; released: 8). The validation split must hold at least this many.
        gate_form: ``softmax`` (L x softmax(a), released) or ``sigmoid`` (2 sigmoid(a_i)).
        gate_power: the gate's power on each LoRA delta: 1, or 3 (released, by accident).
        loss: the search's training and validation loss: ``answer_ce`` (cross-entropy over
            the answer options) or ``token_nll`` (answer tokens' NLL, released); default: the
            objective's ``train_loss``. The fine-tune always uses the objective's.
        selection_checkpoints: search lengths (steps) after which the selection is recorded
            (default: powers of two and the last step).
        layer_ablation: at the end of the search, the validation-loss change of zeroing each
            layer's LoRA delta and its Spearman correlation with the gate logits.
        hypergradient: how the gate gradient is computed (module docstring of hypergrad).
        unroll_steps: K inner steps unrolled by ``unrolled``.
        gate_lr: Adam learning rate of the gate logits (released: 0.01).
        selection / top_k: the selection rule (top_k for ``top_k``).
        finetune_steps: iterations of the final fine-tune (default: budget.iterations).
        fd_epsilon / virtual_lr: DARTS' radius and virtual step xi (default: inner lr).
        random_control: also fine-tune as many random layers (seeded by the cell's seed).
        random_draws: with ``random_control``, how many random layer sets: draw d is seeded by
            ``10_000 + 1_000 d + seed`` (as ``lora_baselines``' ``random``) and reported as
            ``random_`` (draw 0), ``random_d1_``, ...
        eval_every: evaluate the fine-tunes' validation and test splits every this many
            steps (the curves and ``overfit_nats`` in the row; default: only at the end).
        finetune_early_stop: report the final fine-tune (and the random controls) at the
            checkpoint with the lowest validation loss, as ``lora_baselines``'
            ``lora_early_stop`` does for LoRA on all layers; needs ``eval_every``. Not in the
            paper or the release: the overfitting-regime study found Flexora's un-stopped
            fine-tune overfitting at every learning rate that learns.
        """
        if random_draws < 1:
            raise ConfigError(f"flexora: random_draws must be >= 1, got {random_draws}")
        if eval_every is not None and eval_every < 1:
            raise ConfigError(f"flexora: eval_every must be >= 1, got {eval_every}")
        if finetune_early_stop and eval_every is None:
            raise ConfigError(
                "flexora: finetune_early_stop needs eval_every (steps between the validation"
                " checkpoints it stops on), e.g. eval_every = 16"
            )
        if search_steps is not None and search_epochs is not None:
            raise ConfigError(
                "flexora: give the search length as search_steps or search_epochs, not both"
            )
        if search_steps is not None and search_steps < 1:
            raise ConfigError(
                f"flexora: search_steps must be >= 1 (a search budget of zero selects nothing),"
                f" got {search_steps}"
            )
        if search_epochs is not None and not search_epochs > 0:
            raise ConfigError(
                f"flexora: search_epochs must be > 0 (a search budget of zero selects nothing),"
                f" got {search_epochs}"
            )
        if val_batch_size is not None and val_batch_size < 1:
            raise ConfigError(f"flexora: val_batch_size must be >= 1, got {val_batch_size}")
        check_gate_options(gate_form, gate_power)
        if loss is not None and loss not in SEARCH_LOSSES:
            raise ConfigError(
                f"flexora: loss '{loss}' is not one of 'answer_ce' (answer cross-entropy) or"
                " 'token_nll' (answer-token NLL, as released)"
            )
        if selection_checkpoints is not None and (
            not selection_checkpoints or min(selection_checkpoints) < 1
        ):
            raise ConfigError(
                "flexora: selection_checkpoints must be a non-empty list of search steps >= 1,"
                f" got {selection_checkpoints}"
            )
        if unroll_steps < 1:
            raise ConfigError(f"flexora: unroll_steps must be >= 1, got {unroll_steps}")
        if gate_lr <= 0:
            raise ConfigError(f"flexora: gate_lr must be > 0, got {gate_lr}")
        if finetune_steps is not None and finetune_steps < 1:
            raise ConfigError(f"flexora: finetune_steps must be >= 1, got {finetune_steps}")
        if selection == "top_k" and top_k is None:
            raise ConfigError("flexora: selection = 'top_k' needs top_k")
        self.search_steps = search_steps
        self.search_epochs = search_epochs
        self.val_batch_size = val_batch_size
        self.gate_form = gate_form
        self.gate_power = gate_power
        self.loss = loss
        self.selection_checkpoints = (
            sorted(set(selection_checkpoints)) if selection_checkpoints else None
        )
        self.layer_ablation = layer_ablation
        self.gate_fn = gate_scales(gate_form, gate_power)
        self.hypergradient = hypergradient
        self.unroll_steps = unroll_steps
        self.gate_lr = gate_lr
        self.selection = selection
        self.top_k = top_k
        self.finetune_steps = finetune_steps
        self.fd_epsilon = fd_epsilon
        self.virtual_lr = virtual_lr
        self.random_control = random_control
        self.random_draws = random_draws
        self.eval_every = eval_every
        self.finetune_early_stop = finetune_early_stop

    def supports(self, objective: Objective, optimizer: Optimizer) -> Support:
        """A LoRA text objective; its splits are checked against the search here, so that a
        validation split too small for the validation batch or checkpoints beyond the search
        are a :class:`ConfigError` before anything runs."""
        text = lora_text_support(objective)
        if not text:
            return text
        valid_losses = getattr(objective, "train_losses", None)  # per model (optkit_nlp)
        if self.loss is not None and valid_losses is not None:
            valid = [k for k, v in SEARCH_LOSSES.items() if v in valid_losses]
            if SEARCH_LOSSES[self.loss] not in valid_losses:
                raise ConfigError(
                    f"flexora on objective '{objective.name}': loss '{self.loss}' does not apply"
                    f" to its model '{getattr(objective, 'model_name', '?')}' (token_nll scores"
                    f" a causal LM's answer tokens); valid: {', '.join(map(repr, valid))}"
                )
        sizes = getattr(objective, "sizes", None)
        if isinstance(sizes, dict) and hasattr(objective, "batch_size"):
            self.check_splits(objective.name, sizes, int(objective.batch_size))
        return Support.yes()

    def resolved_steps(self, train_size: int, batch_size: int) -> int:
        """Search steps: ``search_steps``, or ceil(search_epochs x train_size / batch_size)."""
        if self.search_epochs is not None:
            return max(1, math.ceil(self.search_epochs * train_size / batch_size))
        return self.search_steps if self.search_steps is not None else DEFAULT_SEARCH_STEPS

    def check_splits(self, name: str, sizes: dict[str, int], batch_size: int) -> None:
        """ConfigError when the validation split cannot fill a validation batch (or holds
        fewer than 2 examples) or a selection checkpoint lies beyond the search."""
        val_batch = self.val_batch_size or batch_size
        held_out = sizes.get("validation", 0)
        if held_out < max(2, val_batch):
            raise ConfigError(
                f"flexora on objective '{name}': the validation split holds {held_out}"
                f" example(s) but each gate step draws a validation batch of {val_batch}"
                " (hyperoptimizer val_batch_size, default the objective's batch_size); raise"
                f" the objective's val_size to at least {max(2, val_batch)} or lower"
                " val_batch_size (at least 2 examples must be held out)"
            )
        steps = self.resolved_steps(sizes.get("train", 1), batch_size)
        if self.selection_checkpoints and max(self.selection_checkpoints) > steps:
            raise ConfigError(
                f"flexora: selection_checkpoints {self.selection_checkpoints} go beyond the"
                f" search's {steps} steps; use steps between 1 and {steps}"
            )

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
        ablation_s = float(search["ablation"].get("ablation_s", 0.0))
        # model load (the layer ablation is timed apart, in ablation_s)
        times["search_setup_s"] = time.perf_counter() - start - search["loop_s"] - ablation_s
        release_memory(context.device)  # the search model is gone: free it for the fine-tune

        start = time.perf_counter()
        chosen = select_layers(search["logits"], self.selection, self.top_k, self.gate_form)
        times["selection_s"] = time.perf_counter() - start
        context.record(
            {
                "stage": "selection",
                "selected_layers": chosen.layers,
                "fallback": chosen.fallback,
                "rule": self.selection,
                "selection_by_step": search["selection_by_step"],
                "selection_jaccard_by_step": search["jaccard_by_step"],
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
            "search_steps": search["steps"],
            "val_batch_size": search["val_batch_size"],
            "gate_form": self.gate_form,
            "gate_power": self.gate_power,
            "search_loss": search["loss"],
            "selection_by_step": search["selection_by_step"],
            "selection_jaccard_by_step": search["jaccard_by_step"],
            **search["ablation"],
            **times,
            **self._reported(final),
        }
        for draw in range(self.random_draws if self.random_control else 0):
            release_memory(context.device)
            gen = torch.Generator().manual_seed(10_000 + 1_000 * draw + context.seed)
            perm = torch.randperm(search["num_layers"], generator=gen)
            random_layers = sorted(int(i) for i in perm[: len(chosen.layers)])
            name = "random" if draw == 0 else f"random_d{draw}"
            control = self._finetune(context, random_layers, steps, name)
            extras.update(self._reported(control, prefix=f"{name}_"))
            extras[f"{name}_layers"] = random_layers
        return HyperResult(
            best_config={"objective.layers": chosen.layers},
            best_score=float(self._reported(final)["val_loss"]),
            extras=extras,
        )

    def _search(self, context: HyperContext) -> dict[str, Any]:
        overrides: dict[str, Any] = {"objective.layers": None}
        if self.loss is not None:
            overrides["objective.train_loss"] = SEARCH_LOSSES[self.loss]
        objective: Any = seeded_objective(context, overrides)
        if not hasattr(objective, "sample_split_batch"):
            raise ConfigError(
                f"flexora needs a LoRA text objective (optkit_nlp), got '{objective.name}'"
            )
        self.check_splits(objective.name, objective.sizes, objective.batch_size)
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
        steps = self.resolved_steps(objective.sizes["train"], objective.batch_size)
        val_batch_size = self.val_batch_size or objective.batch_size
        checkpoints = set(self.selection_checkpoints or stability.default_checkpoints(steps))
        gate_fn = self.gate_fn

        def gated(params: Any, g: torch.Tensor, batch: Any) -> torch.Tensor:
            with gates.applied(g):
                return objective.loss(params, batch)

        history: list[list[float]] = []
        selections: dict[int, list[int]] = {}
        if context.device.type == "cuda":
            torch.cuda.synchronize(context.device)
        loop_start = time.perf_counter()
        for step in range(steps):
            gates.set(gate_fn(logits.detach()))
            params, state, info = optimizer.step(params, state, oracle)
            gates.set(None)
            val_batch = objective.sample_split_batch("validation", gen, val_batch_size)
            if self.hypergradient == "first_order":
                hg = hypergrad.first_order(gated, params, logits, val_batch, gate_fn)
            elif self.hypergradient == "unrolled":
                assert update is not None
                update.state = state
                batches = [
                    objective.sample_split_batch("train", gen) for _ in range(self.unroll_steps)
                ]
                hg = hypergrad.unrolled(
                    gated, gated, params, logits, batches, val_batch, update, gate_fn
                )
            else:
                batch = objective.sample_split_batch("train", gen)
                hg = hypergrad.finite_difference(
                    gated, gated, params, logits, batch, val_batch, xi, self.fd_epsilon, gate_fn
                )
            gate_step(logits, hg.grad, gate_opt, step, self.hypergradient)
            values = gate_values(logits.detach(), self.gate_form).tolist()
            history.append(values)
            if step + 1 in checkpoints:
                picked = select_layers(logits, self.selection, self.top_k, self.gate_form)
                selections[step + 1] = picked.layers
            context.record(
                {
                    "stage": "search",
                    "step": step,
                    "train_loss": info.loss,
                    "val_loss": hg.val_loss,
                    "gates": values,
                    "logits": logits.detach().cpu().tolist(),
                    "hypergrad_norm": float(hg.grad.norm()),
                }
            )
        if context.device.type == "cuda":
            torch.cuda.synchronize(context.device)
        loop_s = time.perf_counter() - loop_start
        ablation: dict[str, Any] = {}
        if self.layer_ablation:
            ablation = self._ablation(context, objective, gates, params, logits.detach())
        peak = (
            torch.cuda.max_memory_allocated(context.device) / 2**20
            if context.device.type == "cuda"
            else 0.0
        )
        return {
            "loop_s": loop_s,
            "steps": steps,
            "val_batch_size": val_batch_size,
            "loss": objective.train_loss,
            "selection_by_step": {str(k): ",".join(map(str, v)) for k, v in selections.items()},
            "jaccard_by_step": stability.jaccard_by_length(selections),
            "ablation": ablation,
            "logits": logits.detach().cpu(),
            "gates": history,
            "num_layers": num_layers,
            "trainable_params": objective.trainable_parameter_count(),
            "peak_memory_mb": peak,
        }

    def _ablation(
        self,
        context: HyperContext,
        objective: Any,
        gates: LayerGates,
        params: Any,
        logits: torch.Tensor,
    ) -> dict[str, Any]:
        """Validation-loss change (search loss, whole validation split) of zeroing each
        layer's LoRA delta at the end of the search; Spearman with the logits."""
        data = objective.data["validation"]
        n = int(data["label"].shape[0])
        size = objective.eval_batch_size

        @torch.no_grad()
        def loss_at(scales: torch.Tensor) -> float:
            total = 0.0
            with gates.applied(scales):
                for start in range(0, n, size):
                    batch = {k: v[start : start + size] for k, v in data.items()}
                    total += float(objective.loss(params, batch)) * int(batch["label"].shape[0])
            return total / n

        start = time.perf_counter()
        base, changes = stability.layer_ablation(loss_at, self.gate_fn(logits))
        rho = stability.spearman(logits.cpu(), changes)
        row = {
            "ablation_base_loss": base,
            "ablation_loss_change": changes,
            "ablation_spearman": rho,
            "ablation_s": time.perf_counter() - start,
        }
        context.record({"stage": "layer_ablation", "logits": logits.cpu().tolist(), **row})
        return row

    def _reported(self, result: FinetuneResult, prefix: str = "") -> dict[str, Any]:
        """A fine-tune's metrics: at its end, or at its best validation checkpoint with
        ``finetune_early_stop``."""
        if self.finetune_early_stop:
            return result.early_stop_metrics(prefix)
        return result.metrics(prefix)

    def _finetune(self, context: HyperContext, layers: list[int], steps: int, label: str) -> Any:
        objective = seeded_objective(context, {"objective.layers": layers})
        optimizer = context.create_optimizer({})
        gen = torch.Generator().manual_seed(context.seed)
        return run_finetune(
            objective, optimizer, steps, gen, context.record, label, eval_every=self.eval_every
        )
