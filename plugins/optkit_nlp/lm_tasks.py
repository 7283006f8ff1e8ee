"""Objectives that fine-tune a pretrained language model with LoRA (PEFT) on a real text task.

Every task is multiple choice (classification uses the class names as options): the score of
an option is its length-normalized log-likelihood given the prompt, the prediction is the best
option, and the training loss is the cross-entropy of the correct option over those scores
(``train_loss = "choice_ce"``), the negative normalized log-likelihood of the correct option
alone (``"answer_nll"``), or the token NLL of the correct options' tokens averaged over all of
the batch's answer tokens (``"token_nll"``, the SFT loss of LLaMA-Factory, which the released
Flexora code uses).

Parameters are the trainable adapter tensors as a params dict (PEFT's parameter names); the loss
is pure through :func:`torch.func.functional_call`, so any optkit optimizer drives the
fine-tune. The model runs in ``eval`` mode (no dropout), so the loss depends on
``(params, batch)`` only.

Batches (one per gradient evaluation), for B examples, C options, sequences of length T,
options of at most K - 1 tokens: ``input_ids``, ``attention_mask``, ``position_ids`` of shape
``(B, C, T)`` (left padded: every option ends at position T - 1), ``option_mask`` ``(B, C,
K - 1)`` marking the option's tokens among the last K - 1 positions, ``valid`` ``(B, C)`` and
``label`` ``(B,)``.

With an encoder (``model = "minilm-l6"``, all-MiniLM-L6-v2) the scores come from a linear head
instead (:mod:`optkit_nlp.encoder`): one logit per class over the mean-pooled embedding of the
prompt, or one scalar per (prompt, option) pair for multiple choice; the head is trained in
every method (PEFT ``modules_to_save``) and counted in the trainable parameters. The loss and
metrics are the same cross-entropy over ``(B, C)`` scores, so ``train_loss`` can only be
``choice_ce`` there; the batches are those of :mod:`optkit_nlp.encoder`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch

from optkit.errors import ConfigError
from optkit.interfaces import Objective, Params

Variant = Literal["lora", "dora", "rslora", "adalora", "full"]

_DATASET_CACHE: dict[tuple[Any, ...], Any] = {}
"""Encoded splits per (model, task, sizes, split_seed, max_length): tokenizing is done once per
process and model (each model has its own tokenizer and batch layout)."""


def encode(choices: list[Any], tokenizer: Any, max_length: int) -> dict[str, torch.Tensor]:
    """Tokenize examples into the left-padded tensors described in the module docstring.

    The prompt is cut from the left when prompt + option exceeds ``max_length`` tokens.
    Returns tensors with a leading dimension N = ``len(choices)``.
    """
    n_opt = max(len(c.options) for c in choices)
    rows: list[list[tuple[list[int], int]]] = []
    for c in choices:
        prompt = tokenizer(c.prompt, add_special_tokens=False)["input_ids"]
        row = []
        for opt in c.options:
            ids = tokenizer(opt, add_special_tokens=False)["input_ids"][: max_length // 2]
            keep = max_length - len(ids)
            row.append((prompt[-keep:] + ids, len(ids)))
        rows.append(row)
    t = max(len(ids) for row in rows for ids, _ in row)
    k = max(n for row in rows for _, n in row) + 1
    n = len(choices)
    input_ids = torch.full((n, n_opt, t), int(tokenizer.pad_token_id), dtype=torch.long)
    attention = torch.zeros((n, n_opt, t), dtype=torch.long)
    option_mask = torch.zeros((n, n_opt, k - 1))
    valid = torch.zeros((n, n_opt), dtype=torch.bool)
    for i, row in enumerate(rows):
        for j, (ids, n_ids) in enumerate(row):
            input_ids[i, j, t - len(ids) :] = torch.tensor(ids)
            attention[i, j, t - len(ids) :] = 1
            option_mask[i, j, k - 1 - n_ids :] = 1.0
            valid[i, j] = True
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
    label = torch.tensor([c.label for c in choices], dtype=torch.long)
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "position_ids": position_ids,
        "option_mask": option_mask,
        "valid": valid,
        "label": label,
    }


def choice_scores(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Length-normalized log-likelihood of every option: shape ``(B, C)`` (-inf if invalid)."""
    b, c, t = batch["input_ids"].shape
    k = batch["option_mask"].shape[-1] + 1
    out = model(
        input_ids=batch["input_ids"].reshape(b * c, t),
        attention_mask=batch["attention_mask"].reshape(b * c, t),
        position_ids=batch["position_ids"].reshape(b * c, t),
        logits_to_keep=k,
        use_cache=False,
    )
    logits = out.logits[:, :-1].float()  # (B*C, K-1, V): predicts the last K-1 tokens
    targets = batch["input_ids"].reshape(b * c, t)[:, t - (k - 1) :]
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    mask = batch["option_mask"].reshape(b * c, k - 1).to(logp.dtype)
    scores = (logp * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
    scores = scores.reshape(b, c)
    return scores.masked_fill(~batch["valid"], float("-inf"))


class LoraTextTask(Objective):
    """Base of the text objectives; subclasses set ``task`` and ``name``."""

    task: ClassVar[str] = ""
    vmappable: ClassVar[bool] = False
    stochastic = True
    primary_metric: ClassVar[str | None] = "test_accuracy"
    test_marks: ClassVar[tuple[str, ...]] = ("nlp",)
    test_config: ClassVar[dict[str, Any]] = {
        "train_size": 4,
        "val_size": 2,
        "test_size": 2,
        "batch_size": 1,
        "eval_batch_size": 2,
        "max_length": 24,
        "layers": [0, 29],
    }
    """Smallest configuration for the contract kits (the real model, two LoRA layers)."""

    def __init__(
        self,
        *,
        model: Literal["smollm2-135m", "minilm-l6"] = "smollm2-135m",
        train_size: int = 1000,
        val_size: int = 200,
        test_size: int = 500,
        split_seed: int | Literal["seed"] = 0,
        batch_size: int = 8,
        eval_batch_size: int = 16,
        max_length: int = 96,
        peft: Variant = "lora",
        lora_rank: int = 8,
        lora_alpha: float = 16.0,
        target_modules: list[str] | None = None,
        layers: list[int] | None = None,
        adalora_target_rank: int = 8,
        adalora_init_rank: int = 12,
        adalora_total_step: int = 100,
        train_loss: Literal["choice_ce", "answer_nll", "token_nll"] = "choice_ce",
        attn_implementation: Literal["eager", "sdpa"] = "eager",
    ) -> None:
        """Args:
        model: the pretrained model (see :data:`optkit_nlp.models.MODELS`): the causal LM
            ``smollm2-135m`` or the encoder ``minilm-l6`` (a trained linear head, module
            docstring).
        train_size / val_size / test_size: examples in each split (disjoint, from a
            permutation seeded by ``split_seed``); ``val_size`` is the held-out validation
            split that Flexora's gate steps use. ``split_seed = "seed"``: the cell's seed,
            so each measured seed draws its own splits (resolved by the Flexora and
            ``lora_baselines`` cells; a plain run refuses it).
        batch_size: examples per gradient evaluation; ``eval_batch_size`` for metrics.
        max_length: longest tokenized prompt + option (prompts are cut from the left).
        peft: ``lora`` | ``dora`` | ``rslora`` | ``adalora`` (PEFT options) | ``full``
            (every weight of the model is trained).
        lora_rank / lora_alpha: LoRA rank r and alpha (scaling alpha / r, alpha / sqrt(r)
            for rslora). ``target_modules``: linear module names (default per model:
            q_proj, v_proj for SmolLM2; query, value for MiniLM).
        layers: indices of the transformer layers that get adapters (default: all).
        adalora_*: AdaLoRA's target / initial rank and the total number of steps of its
            rank schedule.
        """
        where = f"objective '{self.name}'"
        for key, value in (
            ("train_size", train_size),
            ("batch_size", batch_size),
            ("eval_batch_size", eval_batch_size),
            ("lora_rank", lora_rank),
        ):
            if value < 1:
                raise ConfigError(f"{where}: {key} must be >= 1, got {value}")
        if val_size < 1:
            raise ConfigError(
                f"{where}: val_size must be >= 1 (the held-out validation split), got {val_size}"
            )
        if test_size < 1:
            raise ConfigError(f"{where}: test_size must be >= 1, got {test_size}")
        if max_length < 8:
            raise ConfigError(f"{where}: max_length must be >= 8, got {max_length}")
        if layers is not None and (not layers or min(layers) < 0):
            raise ConfigError(f"{where}: layers must be a non-empty list of indices >= 0")
        if peft == "full" and layers is not None:
            raise ConfigError(f"{where}: peft='full' trains every layer; drop 'layers'")
        from optkit_nlp.models import model_spec

        try:
            spec = model_spec(model)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if train_loss not in spec.train_losses:
            raise ConfigError(
                f"{where}: train_loss '{train_loss}' does not apply to model '{model}'"
                f" ({spec.kind}: {spec.description}); 'answer_nll' and 'token_nll' score the"
                " answer tokens of a causal LM. Valid for this model:"
                f" {', '.join(repr(x) for x in spec.train_losses)}"
            )
        self.model_kind = spec.kind
        self.model_name = model
        self.sizes = {"train": train_size, "validation": val_size, "test": test_size}
        self.split_seed = split_seed
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.max_length = max_length
        self.peft = peft
        self.lora_rank = lora_rank
        self.lora_alpha = lora_alpha
        self.target_modules = list(target_modules or spec.target_modules)
        self.layers = sorted(set(layers)) if layers is not None else None
        self.adalora = (adalora_target_rank, adalora_init_rank, adalora_total_step)
        self.train_loss = train_loss
        self.attn_implementation = attn_implementation
        self.model: Any = None
        self.data: dict[str, dict[str, torch.Tensor]] = {}
        self.num_layers = 0

    # ---------------------------------------------------------------- set-up

    def data_artifacts(self) -> tuple[str, ...]:
        from optkit_nlp.models import MODELS
        from optkit_nlp.text_data import ARTIFACTS

        return (MODELS[self.model_name].artifact, ARTIFACTS[self.task])

    def prepare(self, device: torch.device, dtype: torch.dtype) -> None:
        """Load the model and the splits, attach the adapters (idempotent)."""
        if self.model is not None and self.device == device and self.dtype == dtype:
            return
        super().prepare(device, dtype)
        from optkit_flexora.layers import discover_layers

        if self.model_kind == "encoder":
            base, tokenizer = self._load_encoder()
        else:
            from optkit_nlp.models import load_causal_lm

            base, tokenizer = load_causal_lm(
                self.model_name, attn_implementation=self.attn_implementation
            )
        stack = discover_layers(base)
        self.num_layers = stack.count
        if self.layers is not None and max(self.layers) >= stack.count:
            raise ConfigError(
                f"objective '{self.name}': layers {self.layers} out of range; model"
                f" '{self.model_name}' has layers 0..{stack.count - 1}"
            )
        self.layer_stack = stack
        self.model = self._attach(base, stack).to(device=device, dtype=dtype).eval()
        if self.model_kind != "encoder":  # the encoder's splits were loaded with its head
            self.data = self._load_splits(tokenizer)

    def _load_encoder(self) -> tuple[Any, Any]:
        """The encoder with its linear head (:class:`optkit_nlp.encoder.EncoderClassifier`)
        and tokenizer; loads the splits first (the head's outputs depend on the task)."""
        from optkit_nlp.encoder import EncoderClassifier, head_outputs
        from optkit_nlp.models import load_encoder

        backbone, tokenizer = load_encoder(
            self.model_name, attn_implementation=self.attn_implementation
        )
        positions = int(getattr(backbone.config, "max_position_embeddings", 512))
        if self.max_length > positions:
            raise ConfigError(
                f"objective '{self.name}': max_length {self.max_length} exceeds the"
                f" {positions} positions of model '{self.model_name}'; use at most {positions}"
            )
        self.data = self._load_splits(tokenizer)
        return EncoderClassifier(backbone, head_outputs(self.data["train"])), tokenizer

    def _attach(self, base: Any, stack: Any) -> Any:
        if self.peft == "full":
            for p in base.parameters():
                p.requires_grad_(True)
            return base
        from peft import AdaLoraConfig, LoraConfig, get_peft_model

        linear_names = {
            n.rsplit(".", 1)[-1] for n, m in base.named_modules() if isinstance(m, torch.nn.Linear)
        }
        missing = [t for t in self.target_modules if t not in linear_names]
        if missing:
            raise ConfigError(
                f"objective '{self.name}': target_modules {missing} not found in model"
                f" '{self.model_name}'; its linear modules are {sorted(linear_names)}"
            )
        common: dict[str, Any] = {
            "r": self.lora_rank,
            "lora_alpha": self.lora_alpha,
            "lora_dropout": 0.0,
            "target_modules": self.target_modules,
            "layers_to_transform": self.layers,
            "layers_pattern": stack.pattern if self.layers is not None else None,
        }
        if self.model_kind == "encoder":
            common["modules_to_save"] = ["head"]  # the classifier head is always trained
        if self.peft == "adalora":
            target_r, init_r, total = self.adalora
            common.pop("r")
            config: Any = AdaLoraConfig(
                target_r=target_r,
                init_r=init_r,
                total_step=total,
                tinit=max(1, total // 10),
                tfinal=max(1, total // 5),
                deltaT=1,
                orth_reg_weight=0.5,
                **common,
            )
        else:
            config = LoraConfig(
                use_dora=self.peft == "dora", use_rslora=self.peft == "rslora", **common
            )
        return get_peft_model(base, config)

    def _load_splits(self, tokenizer: Any) -> dict[str, dict[str, torch.Tensor]]:
        from optkit_nlp.text_data import load_task, split_examples

        if not isinstance(self.split_seed, int):
            raise ConfigError(
                f"objective '{self.name}': split_seed = 'seed' is resolved by the flexora and"
                " lora_baselines hyperoptimizer cells; in a plain run give an integer"
            )
        key = (
            self.model_name,
            self.task,
            tuple(self.sizes.items()),
            self.split_seed,
            self.max_length,
        )
        if key not in _DATASET_CACHE:
            examples = load_task(self.task)
            splits = split_examples(
                examples, dict(self.sizes), self.split_seed, f"objective '{self.name}'"
            )
            if self.model_kind == "encoder":
                from optkit_nlp.encoder import encode_for_encoder, is_classification

                classify = is_classification(examples)
                _DATASET_CACHE[key] = {
                    s: encode_for_encoder(ex, tokenizer, self.max_length, classify)
                    for s, ex in splits.items()
                }
            else:
                _DATASET_CACHE[key] = {
                    s: encode(ex, tokenizer, self.max_length) for s, ex in splits.items()
                }
        return {
            s: {k: v.to(self.device) for k, v in d.items()} for s, d in _DATASET_CACHE[key].items()
        }

    # ---------------------------------------------------------------- interface

    @property
    def train_losses(self) -> tuple[str, ...]:
        """The valid ``train_loss`` values for this objective's model (Flexora checks its
        search ``loss`` against them before anything runs)."""
        from optkit_nlp.models import model_spec

        return model_spec(self.model_name).train_losses

    def trainable_names(self) -> list[str]:
        return [n for n, p in self.model.named_parameters() if p.requires_grad]

    def init_params(self, generator: torch.Generator) -> Params:
        """The adapters' initial tensors (PEFT's own initialization: LoRA B = 0, so the
        fine-tune starts at the pretrained model); ``generator`` is unused."""
        self._require_prepared()
        return {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    def trainable_parameter_count(self) -> int:
        self._require_prepared()
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def sample_split_batch(
        self, split: str, generator: torch.Generator, size: int | None = None
    ) -> dict[str, Any]:
        """``size`` (default ``batch_size``) examples drawn without replacement from ``split``."""
        data = self.data[split]
        n = data["label"].shape[0]
        size = self.batch_size if size is None else size
        idx = torch.randperm(n, generator=generator)[: min(size, n)].to(self.device)
        return {k: v[idx] for k, v in data.items()}

    def sample_batch(self, generator: torch.Generator, params: Params) -> dict[str, Any]:
        return self.sample_split_batch("train", generator)

    def scores(self, params: Params, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Option scores ``(B, C)`` at ``params`` (a subset of the trainable tensors)."""
        from torch.func import functional_call

        def run(**kwargs: Any) -> Any:
            return functional_call(self.model, params, (), kwargs, strict=False)

        if self.model_kind == "encoder":
            from optkit_nlp.encoder import encoder_scores

            return encoder_scores(run, batch)
        return choice_scores(run, batch)

    def loss(self, params: Params, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        scores = self.scores(params, batch)
        if self.train_loss == "choice_ce":
            loss = torch.nn.functional.cross_entropy(
                scores.masked_fill(~batch["valid"], -1e9), batch["label"]
            )
        elif self.train_loss == "token_nll":  # sum of answer-token NLLs / answer tokens
            label = batch["label"][:, None]
            tokens = batch["option_mask"].sum(-1).gather(1, label).squeeze(1)  # (B,)
            picked = scores.gather(1, label).squeeze(1)  # mean log-prob per token, (B,)
            loss = -(picked * tokens).sum() / tokens.sum().clamp(min=1.0)
        else:
            loss = -scores.gather(1, batch["label"][:, None]).mean()
        if self.peft == "adalora":
            loss = loss + self.orthogonal_regularization(params)
        return loss

    def orthogonal_regularization(self, params: Params) -> torch.Tensor:
        """AdaLoRA's penalty sum ||P P^T - I||_F over its A and B factors (as PEFT adds it
        to the model loss), times ``orth_reg_weight``."""
        weight = self.model.peft_config["default"].orth_reg_weight
        total = torch.zeros((), device=self.device)
        for name, p in params.items():
            if "lora_A" in name:
                cov = p @ p.T
            elif "lora_B" in name:
                cov = p.T @ p
            else:
                continue
            eye = torch.eye(cov.shape[0], device=p.device, dtype=p.dtype)
            total = total + torch.linalg.matrix_norm(cov - eye)
        return weight * total / max(1, sum("lora_A" in n for n in params))

    @torch.no_grad()
    def evaluate_split(self, params: Params, split: str) -> dict[str, float]:
        """``{"loss": mean CE, "accuracy": fraction correct}`` over the whole ``split``."""
        data = self.data[split]
        n = data["label"].shape[0]
        correct, total_loss = 0, 0.0
        for start in range(0, n, self.eval_batch_size):
            batch = {k: v[start : start + self.eval_batch_size] for k, v in data.items()}
            scores = self.scores(params, batch)
            total_loss += float(
                torch.nn.functional.cross_entropy(
                    scores.masked_fill(~batch["valid"], -1e9), batch["label"], reduction="sum"
                )
            )
            correct += int((scores.argmax(-1) == batch["label"]).sum())
        return {"loss": total_loss / n, "accuracy": correct / n}

    def evaluate(self, params: Params) -> dict[str, float]:
        """``loss`` (test cross-entropy of the choice scores) and ``test_accuracy``."""
        test = self.evaluate_split(params, "test")
        return {"loss": test["loss"], "test_accuracy": test["accuracy"]}

    def metric_direction(self) -> dict[str, str]:
        return {"loss": "min", "test_accuracy": "max"}

    def _require_prepared(self) -> None:
        if self.model is None:
            raise RuntimeError(f"objective '{self.name}': call prepare() first")


def _task_class(task: str, summary: str) -> type[LoraTextTask]:
    return type(
        f"{task.title().replace('_', '')}Task",
        (LoraTextTask,),
        {
            "name": task,
            "task": task,
            "summary": summary,
            "__doc__": summary,
            "__module__": __name__,
        },
    )


SocialIqa = _task_class("social_iqa", "BIG-bench Social IQa (3 options), LoRA fine-tune of an LM")
WinoWhy = _task_class("winowhy", "BIG-bench WinoWhy (correct/incorrect), LoRA fine-tune of an LM")
StrategyQa = _task_class("strategyqa", "BIG-bench StrategyQA (yes/no), LoRA fine-tune of an LM")
RottenTomatoes = _task_class(
    "rotten_tomatoes", "Rotten Tomatoes sentiment (positive/negative), LoRA fine-tune of an LM"
)
UsDebates = _task_class(
    "us_debates", "2016 US debates: the speaker's party (2 options), LoRA fine-tune of an LM"
)

TEXT_OBJECTIVES: list[type[LoraTextTask]] = [
    SocialIqa,
    WinoWhy,
    StrategyQa,
    RottenTomatoes,
    UsDebates,
]
