"""A pretrained encoder (BERT: all-MiniLM-L6-v2) as a classifier of the text tasks' examples.

The task's examples are the same :class:`optkit_nlp.text_data.Choice` lists the causal LM
scores; the encoder reads them in one of two ways:

* **classification** (every example has the same options, e.g. " positive" / " negative"): the
  prompt alone is encoded and a linear head over its mean-pooled embedding gives one logit per
  class, ``C`` outputs;
* **multiple choice** (options differ between examples): each (prompt, option) pair is encoded as
  a sentence pair and the head gives one scalar per pair, ``1`` output.

Either way the scores have shape ``(B, C)`` and the task's loss is their cross-entropy, so the
metrics (test accuracy, log-loss) are those of the causal LM. The head is trained in every
method (PEFT ``modules_to_save``; with ``peft = "full"`` it is one more trained module).

Batches, for B examples, ``C`` classes / options and sequences of length T: ``input_ids``,
``attention_mask``, ``token_type_ids`` of shape ``(B, R, T)`` with R = 1 (classification) or
R = C (multiple choice; right padded), ``valid`` ``(B, C)`` and ``label`` ``(B,)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from optkit_nlp.text_data import Choice


class EncoderClassifier(torch.nn.Module):
    """``backbone`` (a transformers encoder, e.g. ``BertModel`` without its pooler) and a linear
    ``head`` over the attention-masked mean of the last hidden states.

    Args:
        backbone: returns ``last_hidden_state`` of shape ``(N, T, H)``.
        outputs: the head's outputs (classes, or 1 for a pair's scalar score).
        init_std: standard deviation of the head's weights (BERT's ``initializer_range``);
            the bias starts at 0. Drawn from torch's global generator.
    """

    def __init__(self, backbone: torch.nn.Module, outputs: int, init_std: float = 0.02):
        super().__init__()
        self.backbone = backbone
        config: Any = backbone.config
        hidden = int(config.hidden_size)
        self.head = torch.nn.Linear(hidden, outputs)
        with torch.no_grad():
            self.head.weight.normal_(0.0, init_std)
            self.head.bias.zero_()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits of shape ``(N, outputs)`` for sequences ``(N, T)``."""
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(pooled)


def is_classification(examples: list[Choice]) -> bool:
    """Whether every example offers the same options (then they are the classes)."""
    return len({c.options for c in examples}) == 1


def head_outputs(batch: dict[str, torch.Tensor]) -> int:
    """The head's outputs for encoded data: C for classification (R = 1), else 1."""
    return int(batch["valid"].shape[1]) if batch["input_ids"].shape[1] == 1 else 1


def encode_for_encoder(
    choices: list[Choice], tokenizer: Any, max_length: int, classification: bool
) -> dict[str, torch.Tensor]:
    """Tokenize examples into the tensors described in the module docstring.

    Classification encodes the prompts (cut to ``max_length`` tokens at the right);
    multiple choice encodes (prompt, option) pairs (the longer part is cut first). Missing
    options of an example become an empty-option pair with ``valid = False``.
    """
    n = len(choices)
    n_opt = max(len(c.options) for c in choices)
    if classification:
        first, second = [c.prompt for c in choices], None
        rows = 1
    else:
        first = [c.prompt for c in choices for _ in range(n_opt)]
        second = [
            c.options[j].strip() if j < len(c.options) else ""
            for c in choices
            for j in range(n_opt)
        ]
        rows = n_opt
    enc = tokenizer(
        first,
        second,
        truncation="longest_first",
        max_length=max_length,
        padding="longest",
        return_tensors="pt",
    )
    t = enc["input_ids"].shape[-1]
    valid = torch.zeros((n, n_opt), dtype=torch.bool)
    for i, c in enumerate(choices):
        valid[i, : len(c.options)] = True
    token_types = enc.get("token_type_ids")
    if token_types is None:
        token_types = torch.zeros_like(enc["input_ids"])
    return {
        "input_ids": enc["input_ids"].reshape(n, rows, t),
        "attention_mask": enc["attention_mask"].reshape(n, rows, t),
        "token_type_ids": token_types.reshape(n, rows, t),
        "valid": valid,
        "label": torch.tensor([c.label for c in choices], dtype=torch.long),
    }


def encoder_scores(
    model: Callable[..., torch.Tensor], batch: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Scores ``(B, C)`` (-inf where invalid) from ``model(input_ids=, attention_mask=,
    token_type_ids=)`` returning logits ``(B * R, outputs)`` with R x outputs = C."""
    b, r, t = batch["input_ids"].shape
    logits = model(
        input_ids=batch["input_ids"].reshape(b * r, t),
        attention_mask=batch["attention_mask"].reshape(b * r, t),
        token_type_ids=batch["token_type_ids"].reshape(b * r, t),
    )
    scores = logits.float().reshape(b, -1)
    return scores.masked_fill(~batch["valid"], float("-inf"))
