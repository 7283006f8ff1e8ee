"""Real text tasks as multiple-choice examples: Rotten Tomatoes, the 2016 US debates, and
BIG-bench files (only from a copy the user adds: no registry serves them since 2026-12).

Every task becomes a list of :class:`Choice` (a prompt, its answer options, the index of the
correct one). Classification is the same thing with the class names as options (a verbalizer),
so one scorer (length-normalized log-likelihood of each option) serves all tasks.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from optkit.errors import ConfigError, DataError


@dataclass(frozen=True)
class Choice:
    """One example: ``prompt``; ``options`` (each starts with a space); ``label`` index."""

    prompt: str
    options: tuple[str, ...]
    label: int


TASKS = ("social_iqa", "winowhy", "strategyqa", "rotten_tomatoes", "us_debates")

ARTIFACTS: dict[str, str] = {
    "social_iqa": "bigbench-social_iqa",
    "winowhy": "bigbench-winowhy",
    "strategyqa": "bigbench-strategyqa",
    "rotten_tomatoes": "rotten-tomatoes",
    "us_debates": "us-debates-2016",
}
"""The data artifact each task reads (see :mod:`optkit_nlp.text_catalog`)."""


def _bigbench_examples(task: str, path: Path) -> list[Choice]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"BIG-bench task file {path} cannot be read: {exc}") from exc
    out: list[Choice] = []
    for ex in raw["examples"]:
        options = list(ex["target_scores"])
        scores = [ex["target_scores"][o] for o in options]
        if max(scores) != 1 or scores.count(1) != 1:
            continue
        text = ex["input"].strip()
        if task == "social_iqa":
            prompt = f"{text}\nAnswer:"
        elif task == "winowhy":
            prompt = f"{text}\nThe above reasoning is"
        else:  # strategyqa
            prompt = f"Question: {text}\nAnswer:"
        out.append(Choice(prompt, tuple(" " + o.strip() for o in options), scores.index(1)))
    return out


def _rotten_tomatoes_examples(path: Path) -> list[Choice]:
    out: list[Choice] = []
    with bz2.open(path, "rt", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["category"] not in ("fresh", "rotten"):
                continue
            prompt = f"Review: {row['text'].strip()}\nSentiment:"
            label = 0 if row["category"] == "fresh" else 1
            out.append(Choice(prompt, (" positive", " negative"), label))
    return out


def _debates_examples(path: Path) -> list[Choice]:
    """Statements of the two parties' candidates (moderators dropped); label 0 = Republican."""
    out: list[Choice] = []
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["party"] not in ("Republican", "Democratic"):
                continue
            prompt = f"Debate statement: {' '.join(row['statement'].split())}\nSpeaker's party:"
            label = 0 if row["party"] == "Republican" else 1
            out.append(Choice(prompt, (" Republican", " Democratic"), label))
    return out


def load_task(task: str) -> list[Choice]:
    """All examples of ``task`` (one of :data:`TASKS`), in the file's order."""
    import optkit.data
    import optkit_nlp.text_catalog  # noqa: F401  (registers the artifacts)

    if task not in ARTIFACTS:
        raise ConfigError(f"unknown text task '{task}'; valid: {', '.join(TASKS)}")
    path = optkit.data.fetch(ARTIFACTS[task])
    if task == "rotten_tomatoes":
        return _rotten_tomatoes_examples(path)
    if task == "us_debates":
        return _debates_examples(path)
    return _bigbench_examples(task, path)


def split_examples(
    examples: list[Choice], sizes: dict[str, int], seed: int, where: str
) -> dict[str, list[Choice]]:
    """Disjoint splits of the given sizes from one seeded permutation.

    Args:
        sizes: ``{"train": n1, "validation": n2, "test": n3}`` (all >= 1).
        seed: seeds the permutation (same seed -> same splits).
    """
    for split, n in sizes.items():
        if n < 1:
            raise ConfigError(f"{where}: the {split} split needs at least 1 example, got {n}")
    total = sum(sizes.values())
    if total > len(examples):
        raise ConfigError(
            f"{where}: {total} examples requested ({sizes}) but the task has only"
            f" {len(examples)}; lower train_size / val_size / test_size"
        )
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed))
    out: dict[str, list[Choice]] = {}
    start = 0
    for split, n in sizes.items():
        out[split] = [examples[int(i)] for i in order[start : start + n]]
        start += n
    return out
