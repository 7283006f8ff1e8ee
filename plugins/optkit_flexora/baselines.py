"""The LoRA baselines Flexora is compared against, run as one hyperoptimizer call.

``lora_baselines`` fine-tunes the task's objective once per method, with the task's inner
optimizer and the same number of steps, and records each method's metrics:

* ``lora``: LoRA on every layer; ``dora`` / ``rslora``: PEFT's ``use_dora`` / ``use_rslora``;
* ``adalora``: PEFT AdaLoRA, ``update_and_allocate`` called after every optimizer step (with
  the step's gradients on the parameters, as PEFT requires), orthogonality penalty in the loss;
* ``lora_drop``: a short LoRA run on every layer, then layer importance = mean squared norm of
  the layer's LoRA output (B A x * scaling) on sampled training batches; the most important
  layers whose normalized importance sums to ``drop_threshold`` keep LoRA (LoRA-drop, Zhou et
  al. 2024) and a fresh LoRA is fine-tuned on them;
* ``lora_early_stop``: LoRA on every layer evaluated every ``eval_every`` steps, reported at
  the checkpoint with the lowest validation loss (the validation examples Flexora searches on);
  it shares the ``lora`` run when both are asked for;
* ``random``: ``random_count`` layers drawn with the cell's seed; ``random_draws = k`` draws k
  sets (draw d seeded by ``10_000 + 1_000 d + seed``), reported as ``random_`` (draw 0) and
  ``random_d1_`` ... (draws 1..k-1);
* ``full``: every weight of the model (where it fits in memory).

With ``eval_every`` every method's fine-tune is evaluated periodically, and its row gains the
validation/test curves and ``overfit_nats`` (final minus lowest test log-loss).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Literal

import torch

from optkit.errors import ConfigError
from optkit.interfaces import (
    FirstOrderOptimizer,
    HyperContext,
    HyperOptimizer,
    HyperResult,
    Objective,
    Optimizer,
    Params,
    Support,
)
from optkit_flexora.finetune import (
    FinetuneResult,
    lora_text_support,
    run_finetune,
    seeded_objective,
)
from optkit_flexora.layers import LayerStack

Method = Literal[
    "lora", "lora_early_stop", "dora", "rslora", "adalora", "lora_drop", "random", "full"
]
METHODS: tuple[str, ...] = (
    "lora",
    "lora_early_stop",
    "dora",
    "rslora",
    "adalora",
    "lora_drop",
    "random",
    "full",
)
METHOD_OVERRIDES: dict[str, dict[str, Any]] = {
    "lora": {"objective.peft": "lora", "objective.layers": None},
    "dora": {"objective.peft": "dora", "objective.layers": None},
    "rslora": {"objective.peft": "rslora", "objective.layers": None},
    "adalora": {"objective.peft": "adalora", "objective.layers": None},
    "full": {"objective.peft": "full", "objective.layers": None},
}


def lora_output_norms(
    model: torch.nn.Module,
    stack: LayerStack,
    batches: list[Any],
    run: Any,
    adapter: str = "default",
) -> torch.Tensor:
    """Mean squared norm of each layer's LoRA outputs over ``batches``: shape ``(L,)``.

    ``run(batch)`` performs a forward pass; hooks on every LoRA module add up
    ``||lora_B(lora_A(x)) * scaling||^2`` per layer.
    """
    from peft.tuners.lora import LoraLayer

    totals = torch.zeros(stack.count, dtype=torch.float64)
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and adapter in module.lora_B:
            index = stack.index_of(name)
            if index is None:
                continue
            scaling = module.scaling[adapter]

            def hook(
                mod: Any, inputs: Any, output: torch.Tensor, i: int = index, s: float = scaling
            ) -> None:
                totals[i] += float(((output * s) ** 2).sum())

            handles.append(module.lora_B[adapter].register_forward_hook(hook))
    try:
        with torch.no_grad():
            for batch in batches:
                run(batch)
    finally:
        for h in handles:
            h.remove()
    return totals / max(1, len(batches))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def keep_by_importance(importance: torch.Tensor, threshold: float) -> list[int]:
    """Smallest set of most important layers whose normalized importance sums to
    ``threshold`` (LoRA-drop's rule); sorted indices."""
    share = importance / importance.sum().clamp(min=1e-30)
    order = torch.argsort(share, descending=True)
    kept, total = [], 0.0
    for i in order.tolist():
        kept.append(int(i))
        total += float(share[i])
        if total >= threshold:
            break
    return sorted(kept)


class LoraBaselines(HyperOptimizer):
    """Fine-tunes the task's objective once per baseline method (module docstring) and records
    each method's metrics as ``<method>_<metric>``."""

    name: ClassVar[str] = "lora_baselines"
    summary: ClassVar[str] = (
        "LoRA / DoRA / rsLoRA / AdaLoRA / LoRA-drop / random layers / full fine-tune baselines"
    )

    def __init__(
        self,
        *,
        methods: list[Method] | None = None,
        finetune_steps: int | None = None,
        drop_steps: int = 20,
        drop_batches: int = 8,
        drop_threshold: float = 0.9,
        random_count: int | None = None,
        random_draws: int = 1,
        full_lr: float | None = None,
        eval_every: int | None = None,
    ) -> None:
        """Args:
        methods: which baselines to run, in order (default lora, dora, rslora, adalora,
            lora_drop).
        finetune_steps: iterations of every fine-tune (default budget.iterations).
        drop_steps / drop_batches / drop_threshold: LoRA-drop's short run, the number of
            sampled training batches that score the layers, the importance mass kept.
        random_count: number of random layers for ``random``.
        random_draws: how many random layer sets ``random`` fine-tunes (module docstring).
        eval_every: evaluate every method's fine-tune every this many steps (needed by
            ``lora_early_stop``; default: only at the end).
        full_lr: learning rate of the inner optimizer for ``full`` (full fine-tuning needs a
            far smaller one than LoRA; default: the task's).
        """
        self.methods = list(methods or ["lora", "dora", "rslora", "adalora", "lora_drop"])
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ConfigError(f"lora_baselines: unknown methods {bad}; valid: {', '.join(METHODS)}")
        if eval_every is not None and eval_every < 1:
            raise ConfigError(f"lora_baselines: eval_every must be >= 1, got {eval_every}")
        if "lora_early_stop" in self.methods and eval_every is None:
            raise ConfigError(
                "lora_baselines: method 'lora_early_stop' needs eval_every (steps between the"
                " validation checkpoints it stops on), e.g. eval_every = 20"
            )
        if random_draws < 1:
            raise ConfigError(f"lora_baselines: random_draws must be >= 1, got {random_draws}")
        if "random" in self.methods and (random_count is None or random_count < 1):
            raise ConfigError("lora_baselines: method 'random' needs random_count >= 1")
        if not 0 < drop_threshold <= 1:
            raise ConfigError(
                f"lora_baselines: drop_threshold must be in (0, 1], got {drop_threshold}"
            )
        if finetune_steps is not None and finetune_steps < 1:
            raise ConfigError("lora_baselines: finetune_steps must be >= 1")
        self.finetune_steps = finetune_steps
        self.drop_steps = drop_steps
        self.drop_batches = drop_batches
        self.drop_threshold = drop_threshold
        self.random_count = random_count
        self.random_draws = random_draws
        self.full_lr = full_lr
        self.eval_every = eval_every

    def supports(self, objective: Objective, optimizer: Optimizer) -> Support:
        """A LoRA text objective (the baselines set its ``peft`` variant and layers)."""
        return lora_text_support(objective)

    def optimize(self, context: HyperContext) -> HyperResult:
        steps = self.finetune_steps or int(context.budget.get("iterations", 0))
        if steps < 1:
            raise ConfigError("lora_baselines: set finetune_steps or budget.iterations (>= 1)")
        extras: dict[str, Any] = {}
        best: tuple[float, str] = (float("inf"), "")
        shared: dict[str, FinetuneResult] = {}  # the lora run, reused by lora_early_stop
        for method in self.methods:
            start = time.perf_counter()
            for name, metrics, layers in self._reports(context, method, steps, extras, shared):
                extras.update({f"{name}_{key}": value for key, value in metrics.items()})
                extras[f"{name}_total_s"] = time.perf_counter() - start
                extras[f"{name}_layers"] = ",".join(map(str, layers))
                context.record(
                    {"stage": f"{name}-summary", "method": name, **metrics, "layers": layers}
                )
                best = min(best, (float(metrics["val_loss"]), name))
        return HyperResult(best_config={"method": best[1]}, best_score=best[0], extras=extras)

    def _reports(
        self,
        context: HyperContext,
        method: str,
        steps: int,
        extras: dict[str, Any],
        shared: dict[str, FinetuneResult],
    ) -> list[tuple[str, dict[str, Any], list[int]]]:
        """``(reported name, metrics, layers)`` of one method: one report, or one per random
        draw; ``lora`` and ``lora_early_stop`` share one run (kept in ``shared``)."""
        if method in ("lora", "lora_early_stop"):
            if "lora" not in shared:
                shared["lora"] = self._run(context, "lora", steps, extras)
            result = shared["lora"]
            if method == "lora":
                return [(method, result.metrics(), result.layers)]
            return [(method, result.early_stop_metrics(), result.layers)]
        if method == "random":
            reports = []
            for draw in range(self.random_draws):
                result = self._run(context, "random", steps, extras, draw)
                name = "random" if draw == 0 else f"random_d{draw}"
                reports.append((name, result.metrics(), result.layers))
            return reports
        result = self._run(context, method, steps, extras)
        return [(method, result.metrics(), result.layers)]

    def _objective(self, context: HyperContext, overrides: dict[str, Any]) -> Any:
        return seeded_objective(context, overrides)

    def _run(
        self,
        context: HyperContext,
        method: str,
        steps: int,
        extras: dict[str, Any],
        draw: int = 0,
    ) -> FinetuneResult:
        gen = torch.Generator().manual_seed(context.seed)
        if method in ("lora", "dora", "rslora", "full"):
            objective = self._objective(context, METHOD_OVERRIDES[method])
            lr = {"optimizer.lr": self.full_lr} if method == "full" and self.full_lr else {}
            return run_finetune(
                objective,
                context.create_optimizer(lr),
                steps,
                gen,
                context.record,
                method,
                eval_every=self.eval_every,
            )
        if method == "adalora":
            return self._adalora(context, steps, gen)
        if method == "random":
            count = int(self.random_count or 0)
            probe = self._objective(context, {"objective.peft": "lora", "objective.layers": None})
            if count > probe.num_layers:
                raise ConfigError(
                    f"lora_baselines: random_count {count} exceeds the"
                    f" {probe.num_layers} layers of the model"
                )
            perm = torch.randperm(
                probe.num_layers,
                generator=torch.Generator().manual_seed(10_000 + 1_000 * draw + context.seed),
            )
            layers = sorted(int(i) for i in perm[:count])
            del probe
        else:  # lora_drop
            layers = self._lora_drop_layers(context, gen, extras)
        objective = self._objective(context, {"objective.peft": "lora", "objective.layers": layers})
        label = method if draw == 0 else f"{method}_d{draw}"
        return run_finetune(
            objective,
            context.create_optimizer({}),
            steps,
            gen,
            context.record,
            label,
            eval_every=self.eval_every,
        )

    def _adalora(self, context: HyperContext, steps: int, gen: torch.Generator) -> FinetuneResult:
        if steps < 4:
            raise ConfigError("lora_baselines: adalora's rank schedule needs >= 4 steps")
        objective = self._objective(
            context, {**METHOD_OVERRIDES["adalora"], "objective.adalora_total_step": steps}
        )
        optimizer = context.create_optimizer({})
        if not isinstance(optimizer, FirstOrderOptimizer):
            raise ConfigError(
                f"lora_baselines: adalora needs a first-order inner optimizer (sgd, adam, ...)"
                f" to place gradients for update_and_allocate, got '{optimizer.name}'"
            )
        model = objective.model
        named = dict(model.named_parameters())

        def allocate(step: int, params: Params, grads: Params) -> Params:
            with torch.no_grad():
                for key, value in params.items():
                    named[key].data.copy_(value)
                    named[key].grad = grads[key].detach().clone()
            model.base_model.update_and_allocate(step)
            out = {key: named[key].detach().clone() for key in params}
            for key in params:
                named[key].grad = None
            return out

        return run_finetune(
            objective,
            optimizer,
            steps,
            gen,
            context.record,
            "adalora",
            after_update=allocate,
            eval_every=self.eval_every,
        )

    def _lora_drop_layers(
        self, context: HyperContext, gen: torch.Generator, extras: dict[str, Any]
    ) -> list[int]:
        objective = self._objective(context, {"objective.peft": "lora", "objective.layers": None})
        optimizer = context.create_optimizer({})
        from optkit.oracle import Oracle
        from optkit_flexora.finetune import serial_executor

        params = objective.init_params(gen)
        state = optimizer.init(params)
        oracle = Oracle(objective, serial_executor(), gen)
        _synchronize(objective.device)
        start = time.perf_counter()
        for _ in range(self.drop_steps):
            params, state, _info = optimizer.step(params, state, oracle)
        batches = [objective.sample_split_batch("train", gen) for _ in range(self.drop_batches)]
        importance = lora_output_norms(
            objective.model,
            objective.layer_stack,
            batches,
            lambda b: objective.scores(params, b),
        )
        layers = keep_by_importance(importance, self.drop_threshold)
        _synchronize(objective.device)
        extras["lora_drop_search_s"] = time.perf_counter() - start  # short run + scoring
        extras["lora_drop_importance"] = importance.tolist()
        context.record(
            {"stage": "lora_drop-scores", "importance": importance.tolist(), "kept": layers}
        )
        return layers
