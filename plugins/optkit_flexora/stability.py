"""Is Flexora's search choosing? Stability of the selection and agreement with layer ablation.

* :func:`jaccard` / :func:`mean_pairwise_jaccard`: overlap |A n B| / |A u B| of two selections,
  and its mean over all pairs of several (the selections of several seeds).
* :func:`chance_jaccard`: the expected Jaccard of two random selections of the same sizes.
* :func:`default_checkpoints`: the search lengths at which a run records its selection. A
  search of s steps is the first s steps of a longer one with the same seed (the loop has no
  schedule that depends on the total), so one run records the selection of every shorter
  search; :func:`jaccard_by_length` compares them with the final one.
* :func:`seed_stability`: from the ``end`` rows of several seeds, the mean pairwise Jaccard of
  the selections at each recorded search length (the study's "Jaccard across seeds").
* :func:`layer_ablation` / :func:`spearman`: the validation-loss change when each layer's LoRA
  delta is zeroed (its scale set to 0, the others kept) at the end of the search, and the
  Spearman rank correlation between the gate logits and that change. A search that picks the
  layers that matter gives a positive correlation (zeroing a high-logit layer hurts most).

Command line: ``python -m optkit_flexora.stability RUN/results.jsonl`` prints the cross-seed
Jaccard per search length and each seed's ablation correlation.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch


def jaccard(a: Iterable[int], b: Iterable[int]) -> float:
    """|A n B| / |A u B| of two layer selections (1.0 for two empty ones)."""
    sa, sb = set(a), set(b)
    union = sa | sb
    return 1.0 if not union else len(sa & sb) / len(union)


def mean_pairwise_jaccard(selections: Sequence[Iterable[int]]) -> float | None:
    """Mean :func:`jaccard` over all pairs of ``selections`` (``None`` for fewer than two)."""
    sets = [set(s) for s in selections]
    pairs = list(itertools.combinations(sets, 2))
    if not pairs:
        return None
    return sum(jaccard(a, b) for a, b in pairs) / len(pairs)


def chance_jaccard(k1: int, k2: int, n: int) -> float:
    """Expected Jaccard of two independent uniformly random subsets of sizes ``k1`` and ``k2``
    of ``n`` layers (the intersection is hypergeometric): the level a search that does not
    choose would reach. Two random 13-of-30 sets: about 0.28."""
    if not (0 <= k1 <= n and 0 <= k2 <= n):
        raise ValueError(f"chance_jaccard: sizes {k1}, {k2} must lie in 0..{n}")
    if k1 + k2 == 0:
        return 1.0
    total = math.comb(n, k2)
    expected = 0.0
    for i in range(max(0, k1 + k2 - n), min(k1, k2) + 1):
        p = math.comb(k1, i) * math.comb(n - k1, k2 - i) / total
        expected += p * i / (k1 + k2 - i)
    return expected


def default_checkpoints(steps: int) -> list[int]:
    """Search lengths recorded by default: the powers of two below ``steps``, and ``steps``."""
    out = [1 << k for k in range(steps.bit_length()) if (1 << k) < steps]
    return [*out, steps]


def jaccard_by_length(selections: Mapping[int, Sequence[int]]) -> dict[str, float]:
    """Jaccard of the selection after each search length (keys: steps) with the longest's."""
    final = selections[max(selections)]
    return {str(k): jaccard(v, final) for k, v in sorted(selections.items())}


def parse_layers(text: str) -> list[int]:
    """``"0,3,7"`` -> ``[0, 3, 7]`` (the rows' ``*_layers_str`` form; ``""`` -> ``[]``)."""
    return [int(x) for x in text.split(",") if x.strip()]


def seed_stability(end_rows: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """Mean pairwise Jaccard across the rows (one per seed) of the selections recorded at each
    search length (the rows' ``selection_by_step``: ``{"steps": "0,3,7"}``); only lengths
    every row recorded are kept. Keys: search lengths as strings, ascending."""
    if not end_rows:
        return {}
    common = set.intersection(*(set(r["selection_by_step"]) for r in end_rows))
    return {
        k: mean_pairwise_jaccard([parse_layers(r["selection_by_step"][k]) for r in end_rows])
        for k in sorted(common, key=int)
    }


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n of ``x`` (shape ``(n,)``), ties given their average rank."""
    values = x.double()
    order = torch.argsort(values, stable=True)
    ranks = torch.empty_like(values)
    ranks[order] = torch.arange(1, len(values) + 1, dtype=values.dtype)
    for v in torch.unique(values):
        tied = values == v
        if int(tied.sum()) > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x: Sequence[float] | torch.Tensor, y: Sequence[float] | torch.Tensor) -> float | None:
    """Spearman rank correlation of two equally long vectors (Pearson correlation of their
    average ranks); ``None`` when either is constant or shorter than 2."""
    a = torch.as_tensor(x, dtype=torch.float64).flatten()
    b = torch.as_tensor(y, dtype=torch.float64).flatten()
    if a.shape != b.shape:
        raise ValueError(f"spearman: lengths differ ({a.numel()} vs {b.numel()})")
    if a.numel() < 2:
        return None
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(torch.sqrt((ra * ra).sum() * (rb * rb).sum()))
    if denom == 0.0:
        return None
    return float((ra * rb).sum()) / denom


def layer_ablation(
    loss_at: Callable[[torch.Tensor], float], scales: torch.Tensor
) -> tuple[float, list[float]]:
    """Loss change when each layer's LoRA delta is zeroed.

    Args:
        loss_at: ``scales (L,) -> loss`` (the validation loss with those per-layer scales on
            the LoRA deltas, at fixed LoRA weights).
        scales: the search's final scales, shape ``(L,)``.

    Returns:
        ``(base, changes)``: the loss at ``scales`` and, per layer i, the loss with scale i set
        to 0 minus ``base`` (positive: the layer's LoRA delta lowers the loss).
    """
    base = loss_at(scales)
    changes = []
    for i in range(scales.shape[0]):
        zeroed = scales.clone()
        zeroed[i] = 0.0
        changes.append(loss_at(zeroed) - base)
    return base, changes


def read_end_rows(path: Path) -> list[dict[str, Any]]:
    """The Flexora ``end`` rows (those with ``selection_by_step``) of a results.jsonl."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("event") == "end" and "selection_by_step" in r]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: python -m optkit_flexora.stability RESULTS.jsonl [...]", file=sys.stderr)
        return 2
    rows = [r for p in args for r in read_end_rows(Path(p))]
    if not rows:
        print(f"no Flexora end rows with selection_by_step in {args}", file=sys.stderr)
        return 2
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        key = (r.get("objective"), r.get("hypergradient"), r.get("gate_form"), r.get("gate_power"))
        groups.setdefault(key, []).append(r)
    for key, group in groups.items():
        seeds = sorted(int(r.get("seed", 0)) for r in group)
        print(f"{key}: seeds {seeds}")
        for steps, value in seed_stability(group).items():
            shown = "n/a" if value is None else f"{value:.3f}"
            sizes = [len(parse_layers(r["selection_by_step"][steps])) for r in group]
            n = int(group[0].get("num_layers", max(sizes)))
            pairs = list(itertools.combinations(sizes, 2))
            chance = (
                f"{sum(chance_jaccard(a, b, n) for a, b in pairs) / len(pairs):.3f}"
                if pairs
                else "n/a"
            )
            print(
                f"  search steps {steps:>5}: Jaccard across seeds {shown}"
                f" (layers kept {sizes}; random sets of those sizes: {chance})"
            )
        for r in group:
            print(
                f"  seed {r.get('seed')}: ablation Spearman {r.get('ablation_spearman')},"
                f" search {r.get('search_s', 0):.1f} s, fine-tune {r.get('finetune_s', 0):.1f} s"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
