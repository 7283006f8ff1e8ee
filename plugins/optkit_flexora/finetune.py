"""A LoRA fine-tune of a text objective with any optkit optimizer, timed and recorded.

Shared by Flexora's third stage and the baselines. The loop is the runner's: one
``optimizer.step`` per iteration through an :class:`optkit.oracle.Oracle` (serial executor),
so any registered optimizer (AdamW, OptEx, ...) trains the adapters.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from optkit.interfaces import HyperContext, Objective, Optimizer, Params, Support
from optkit.oracle import Oracle


@dataclass(frozen=True)
class Checkpoint:
    """Validation and test metrics after ``step`` optimizer steps (1-based count)."""

    step: int
    val_loss: float
    val_accuracy: float
    test_loss: float
    test_accuracy: float


@dataclass
class FinetuneResult:
    """Final metrics of a fine-tune.

    ``test_accuracy`` / ``test_loss`` on the objective's test split, ``val_accuracy`` /
    ``val_loss`` on its validation split, ``trainable_params`` (count), ``layers`` trained,
    ``seconds`` of the training loop (evaluation excluded), ``peak_memory_mb`` (CUDA only),
    ``num_layers`` of the model.

    With periodic evaluation (``run_finetune(eval_every=...)``), ``curve`` holds one
    :class:`Checkpoint` per evaluation (the last at the final step), and the result also reports
    the early-stopped metrics (the checkpoint with the lowest validation loss: the same
    validation examples Flexora searches on) and the regime check ``overfit_nats``: the final
    test log-loss minus the lowest test log-loss of any checkpoint (>= 0; the overfitting regime
    of the Flexora study needs LoRA on all layers at >= 0.05 nats).
    """

    test_accuracy: float
    test_loss: float
    val_accuracy: float
    val_loss: float
    trainable_params: int
    layers: list[int]
    seconds: float
    peak_memory_mb: float
    num_layers: int = 0
    test_size: int = 0
    params: Params = field(repr=False, default_factory=dict)
    curve: list[Checkpoint] = field(default_factory=list)

    def early_stopped(self) -> Checkpoint:
        """The checkpoint with the lowest validation loss (the earliest on a tie).

        Raises:
            ValueError: without a curve (``run_finetune`` ran without ``eval_every``).
        """
        if not self.curve:
            raise ValueError("no checkpoints: run the fine-tune with eval_every to early-stop it")
        return min(self.curve, key=lambda c: (c.val_loss, c.step))

    def metrics(self, prefix: str = "") -> dict[str, Any]:
        out = self._final_metrics(prefix)
        if self.curve:
            best = self.early_stopped()
            out[f"{prefix}best_val_step"] = best.step
            out[f"{prefix}overfit_nats"] = self.test_loss - min(c.test_loss for c in self.curve)
            out[f"{prefix}eval_steps"] = [c.step for c in self.curve]
            out[f"{prefix}test_loss_curve"] = [c.test_loss for c in self.curve]
            out[f"{prefix}val_loss_curve"] = [c.val_loss for c in self.curve]
        return out

    def early_stop_metrics(self, prefix: str = "") -> dict[str, Any]:
        """The metrics of the early-stopped checkpoint under the same keys as :meth:`metrics`
        (test/val accuracy and loss taken at that checkpoint; time, size, curves and
        ``overfit_nats`` of the whole run)."""
        best = self.early_stopped()
        out = self.metrics(prefix)
        out.update(
            {
                f"{prefix}test_accuracy": best.test_accuracy,
                f"{prefix}test_loss": best.test_loss,
                f"{prefix}val_accuracy": best.val_accuracy,
                f"{prefix}val_loss": best.val_loss,
                f"{prefix}best_val_step": best.step,
            }
        )
        return out

    def _final_metrics(self, prefix: str) -> dict[str, Any]:
        return {
            f"{prefix}test_accuracy": self.test_accuracy,
            f"{prefix}test_loss": self.test_loss,
            f"{prefix}val_accuracy": self.val_accuracy,
            f"{prefix}val_loss": self.val_loss,
            f"{prefix}trainable_params": self.trainable_params,
            f"{prefix}layers_trained": len(self.layers),
            f"{prefix}finetune_s": self.seconds,
            f"{prefix}peak_memory_mb": self.peak_memory_mb,
            f"{prefix}num_layers": self.num_layers,
            f"{prefix}test_size": self.test_size,
        }


def serial_executor() -> Any:
    from optkit.executors import SerialExecutor  # the core's own: no registry lookup needed

    return SerialExecutor()


def run_finetune(
    objective: Any,
    optimizer: Optimizer,
    steps: int,
    generator: torch.Generator,
    record: Callable[[dict[str, Any]], None],
    label: str,
    after_update: Callable[[int, Params, Params], Params] | None = None,
    eval_every: int | None = None,
) -> FinetuneResult:
    """Train ``objective`` (prepared) for ``steps`` iterations, then evaluate.

    Args:
        after_update: ``(step, new_params, grads) -> params`` called after every update (AdaLoRA's
            rank allocation); needs a first-order optimizer (its bare ``update``).
        eval_every: also evaluate the validation and test splits every ``eval_every`` steps
            and at the end (``FinetuneResult.curve``); evaluation time is excluded from
            ``seconds``. ``None``: only at the end.
    """
    if eval_every is not None and eval_every < 1:
        raise ValueError(f"eval_every must be >= 1, got {eval_every}")
    device = objective.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    params = objective.init_params(generator)
    state = optimizer.init(params)
    oracle = Oracle(objective, serial_executor(), generator)
    curve: list[Checkpoint] = []
    eval_s = 0.0
    start = time.perf_counter()
    for step in range(steps):
        if after_update is None:
            params, state, info = optimizer.step(params, state, oracle)
            loss = info.loss
        else:
            evaluation = oracle.evaluate([params])
            grads = evaluation.grads[0]
            params, state = optimizer.update(params, grads, state)  # type: ignore[attr-defined]
            params = after_update(step, params, grads)
            loss = float(evaluation.losses[0])
        record(
            {
                "stage": label,
                "step": step,
                "train_loss": loss,
                "elapsed_s": time.perf_counter() - start - eval_s,
            }
        )
        done = step + 1
        if eval_every is not None and (done % eval_every == 0 or done == steps):
            eval_start = time.perf_counter()
            curve.append(_checkpoint(objective, params, done))
            record({"stage": f"{label}-eval", **asdict(curve[-1])})
            eval_s += time.perf_counter() - eval_start
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start - eval_s
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
    if curve:
        last = curve[-1]
        test = {"loss": last.test_loss, "accuracy": last.test_accuracy}
        val = {"loss": last.val_loss, "accuracy": last.val_accuracy}
    else:
        test = objective.evaluate_split(params, "test")
        val = objective.evaluate_split(params, "validation")
    layers = objective.layers if objective.layers is not None else list(range(objective.num_layers))
    result = FinetuneResult(
        test["accuracy"],
        test["loss"],
        val["accuracy"],
        val["loss"],
        objective.trainable_parameter_count(),
        list(layers),
        seconds,
        peak,
        objective.num_layers,
        int(objective.data["test"]["label"].shape[0]),
        params,
        curve,
    )
    record({"stage": f"{label}-result", **result.metrics()})
    return result


def _checkpoint(objective: Any, params: Params, step: int) -> Checkpoint:
    val = objective.evaluate_split(params, "validation")
    test = objective.evaluate_split(params, "test")
    return Checkpoint(step, val["loss"], val["accuracy"], test["loss"], test["accuracy"])


def seeded_objective(context: HyperContext, overrides: dict[str, Any]) -> Any:
    """The cell's objective with ``overrides``, prepared with torch's global RNG seeded by the
    cell's seed (PEFT draws the LoRA A factors from it), so the adapters' initialization, like
    the batches, depends on the seed alone and not on what ran before in the process.

    ``split_seed = "seed"`` in the task's objective becomes the cell's seed (each measured seed
    its own train / validation / test split)."""
    if context.objective_spec.get("split_seed") == "seed":
        overrides = {"objective.split_seed": context.seed, **overrides}
    objective: Any = context.create_objective(overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(context.seed)
        objective.prepare(context.device, context.dtype)
    return objective


def lora_text_support(objective: Objective) -> Support:
    """Whether ``objective`` is a LoRA text objective (``optkit_nlp``: per-split batches and
    adapter layers), which both Flexora and the LoRA baselines need."""
    if not hasattr(objective, "sample_split_batch") or not hasattr(objective, "layers"):
        return Support.no(f"objective '{objective.name}' is not a LoRA text objective (optkit_nlp)")
    return Support.yes()
