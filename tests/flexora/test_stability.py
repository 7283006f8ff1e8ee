"""Selection-stability tooling (issue 17, point 2): Jaccard across seeds and search lengths, the
layer-ablation Spearman, and their records in a real run (SmolLM2-135M at tiny size)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from optkit_flexora import stability
from optkit_flexora.gates import LayerGates
from optkit_flexora.layers import discover_layers

import optkit

from .helpers import lm_loss, lora_params, text_batches, tiny_lora

pytestmark = pytest.mark.nlp


def test_jaccard_and_pairwise_mean() -> None:
    assert stability.jaccard([0, 1, 2], [1, 2, 3]) == pytest.approx(2 / 4)
    assert stability.jaccard([], []) == 1.0
    assert stability.jaccard([0], [1]) == 0.0
    sel = [[0, 1], [0, 1], [2, 3]]
    assert stability.mean_pairwise_jaccard(sel) == pytest.approx((1.0 + 0.0 + 0.0) / 3)
    assert stability.mean_pairwise_jaccard([[1]]) is None


def test_chance_jaccard_is_the_mean_over_all_pairs_of_subsets() -> None:
    import itertools

    n, k1, k2 = 6, 2, 3
    pairs = [
        stability.jaccard(a, b)
        for a in itertools.combinations(range(n), k1)
        for b in itertools.combinations(range(n), k2)
    ]
    assert stability.chance_jaccard(k1, k2, n) == pytest.approx(sum(pairs) / len(pairs))
    assert stability.chance_jaccard(13, 13, 30) == pytest.approx(0.28, abs=0.01)
    assert stability.chance_jaccard(30, 30, 30) == 1.0
    with pytest.raises(ValueError, match=r"must lie in 0\.\.30"):
        stability.chance_jaccard(31, 1, 30)


def test_checkpoints_and_jaccard_by_length() -> None:
    assert stability.default_checkpoints(1) == [1]
    assert stability.default_checkpoints(10) == [1, 2, 4, 8, 10]
    assert stability.default_checkpoints(8) == [1, 2, 4, 8]
    by = stability.jaccard_by_length({4: [0, 1], 2: [0, 5], 8: [0, 1, 2]})
    assert by == {"2": pytest.approx(1 / 4), "4": pytest.approx(2 / 3), "8": 1.0}


def test_seed_stability_from_end_rows() -> None:
    rows = [
        {"seed": 0, "selection_by_step": {"2": "0,1", "4": "0,1,2"}},
        {"seed": 1, "selection_by_step": {"2": "2,3", "4": "0,1,2"}},
        {"seed": 2, "selection_by_step": {"2": "0,1", "4": "0,1", "8": "1"}},
    ]
    out = stability.seed_stability(rows)
    assert list(out) == ["2", "4"]  # "8": not every seed recorded it
    assert out["2"] == pytest.approx((0 + 1 + 0) / 3)
    assert out["4"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)


def test_command_line_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        {"event": "start"},
        *(
            {
                "event": "end",
                "seed": seed,
                "objective": "us_debates",
                "num_layers": 4,
                "selection_by_step": {"1": layers, "2": "0,1"},
                "ablation_spearman": 0.5,
                "search_s": 1.0,
                "finetune_s": 2.0,
            }
            for seed, layers in ((0, "0,1"), (1, "2,3"))
        ),
    ]
    path = tmp_path / "results.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    assert stability.main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "search steps     1: Jaccard across seeds 0.000" in out
    assert "search steps     2: Jaccard across seeds 1.000" in out
    assert "random sets of those sizes: 0.389" in out  # 2 of 4: (1 x 1 + 4 x 1/3 + 1 x 0) / 6
    path.write_text(json.dumps(rows[1]))
    assert stability.main([str(path)]) == 0
    assert "Jaccard across seeds n/a (layers kept [2]; random sets of those sizes: n/a)" in (
        capsys.readouterr().out
    )
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"event": "end"}))
    assert stability.main([str(empty)]) == 2


def test_spearman_matches_scipy_with_ties() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(30, generator=gen)
    y = 0.5 * x + torch.randn(30, generator=gen)
    assert stability.spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x, y).statistic)
    xt, yt = [1.0, 2.0, 2.0, 3.0, 5.0], [0.1, 0.3, 0.2, 0.2, 0.9]
    assert stability.spearman(xt, yt) == pytest.approx(scipy_stats.spearmanr(xt, yt).statistic)
    assert stability.spearman([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert stability.spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None
    with pytest.raises(ValueError, match="lengths differ"):
        stability.spearman([1.0, 2.0], [1.0])


def test_layer_ablation_equals_removing_the_layers_lora() -> None:
    """Zeroing layer i's scale changes the loss exactly as deleting layer i's LoRA (B = 0)."""
    model = tiny_lora(layers=3)
    params = lora_params(model)
    batch = text_batches(1, length=12, batch=2)[0]
    gates = LayerGates(model, discover_layers(model))

    def loss_at(scales: torch.Tensor) -> float:
        with torch.no_grad(), gates.applied(scales):
            return float(lm_loss(model, params, batch))

    base, changes = stability.layer_ablation(loss_at, torch.ones(3, dtype=torch.float64))
    gates.remove()
    with torch.no_grad():
        plain = float(lm_loss(model, params, batch))
        assert base == pytest.approx(plain)
        for i in range(3):
            removed = {
                k: torch.zeros_like(v) if f"layers.{i}." in k and "lora_B" in k else v
                for k, v in params.items()
            }
            assert changes[i] == pytest.approx(float(lm_loss(model, removed, batch)) - plain)
    assert max(abs(c) for c in changes) > 1e-6


# ---------------------------------------------------------------- real model, tiny size


def _task(**hyper: Any) -> dict[str, Any]:
    return {
        "name": "stability-test",
        "seeds": [3],
        "device": "cpu",
        "budget": {"iterations": 1},
        "objective": {
            "name": "us_debates",
            "train_size": 6,
            "val_size": 2,
            "test_size": 1,
            "batch_size": 1,
            "eval_batch_size": 2,
            "max_length": 16,
        },
        "optimizer": {"name": "adamw", "lr": 1e-3},
        "hyperoptimizer": {"name": "flexora", "finetune_steps": 1, "gate_lr": 0.1, **hyper},
    }


def _rows(task: dict[str, Any], out: Path) -> list[dict[str, Any]]:
    summary = optkit.run(task, out=out)
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert not summary.cells_failed, [r for r in rows if r.get("event") == "error"]
    return rows


def test_run_records_selection_by_length_and_ablation(tmp_path: Path) -> None:
    rows = _rows(
        _task(
            search_steps=2,
            gate_form="sigmoid",
            gate_power=3,
            loss="token_nll",
            val_batch_size=2,
            layer_ablation=True,
        ),
        tmp_path,
    )
    end = next(r for r in rows if r["event"] == "end")
    search = [r for r in rows if r.get("stage") == "search"]
    assert len(search) == 2 and all(len(r["logits"]) == 30 for r in search)
    assert (end["gate_form"], end["gate_power"], end["search_loss"]) == ("sigmoid", 3, "token_nll")
    assert end["search_steps"] == 2 and end["val_batch_size"] == 2
    assert list(end["selection_by_step"]) == ["1", "2"]
    assert end["selection_by_step"]["2"] == end["selected_layers_str"]
    # the recorded selection at step s is the rule applied to the logits after step s
    for r in search:
        chosen = [i for i, a in enumerate(r["logits"]) if a > 0] or [
            max(range(30), key=lambda i: r["logits"][i])
        ]
        assert end["selection_by_step"][str(r["step"] + 1)] == ",".join(map(str, chosen))
    assert end["selection_jaccard_by_step"]["2"] == 1.0
    ablation = next(r for r in rows if r.get("stage") == "layer_ablation")
    assert len(end["ablation_loss_change"]) == 30 == len(ablation["logits"])
    assert ablation["logits"] == search[-1]["logits"]
    assert end["ablation_spearman"] == pytest.approx(
        stability.spearman(ablation["logits"], end["ablation_loss_change"])
    )
    assert any(abs(c) > 0 for c in end["ablation_loss_change"])
    assert end["ablation_s"] > 0 and end["search_setup_s"] >= 0


def test_a_shorter_search_is_the_prefix_of_a_longer_one(tmp_path: Path) -> None:
    """What makes one run's selection_by_step the selections of shorter searches: with the same
    seed (LoRA initialization included), the first s steps of a longer search are the
    s-step search. Run in one process, after another run has used torch's global RNG."""
    long = _rows(_task(search_steps=2), tmp_path / "long")
    short = _rows(_task(search_steps=1), tmp_path / "short")
    long_search = [r for r in long if r.get("stage") == "search"]
    short_search = [r for r in short if r.get("stage") == "search"]
    assert short_search[0]["logits"] == long_search[0]["logits"]
    long_end = next(r for r in long if r["event"] == "end")
    short_end = next(r for r in short if r["event"] == "end")
    assert long_end["selection_by_step"]["1"] == short_end["selected_layers_str"]


def test_adapters_are_initialized_from_the_cell_seed_alone() -> None:
    """seeded_objective (Flexora's search and fine-tune, the baselines): LoRA A factors depend
    on the seed, not on torch's global generator, which is left as it was."""
    from optkit_flexora.finetune import seeded_objective

    from .helpers import text_cell_context

    spec = {"name": "us_debates", "train_size": 2, "val_size": 2, "test_size": 1, "layers": [0]}

    def lora_a(seed: int) -> torch.Tensor:
        context = text_cell_context(spec, seed)
        params = seeded_objective(context, {"objective.layers": [0]}).init_params(torch.Generator())
        return next(v for k, v in params.items() if "lora_A" in k)

    torch.manual_seed(123)
    first = lora_a(5)
    after = torch.rand(1)
    torch.manual_seed(123)
    torch.rand(7)  # a different global state
    torch.testing.assert_close(lora_a(5), first)
    assert not torch.equal(lora_a(6), first)
    torch.manual_seed(123)
    lora_a(5)
    assert torch.equal(torch.rand(1), after)  # the global generator is untouched
