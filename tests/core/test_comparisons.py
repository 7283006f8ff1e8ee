"""optkit.comparisons: bootstrap CIs over seeds, targets, reached counts, paired ratios,
performance profiles, and the rows of ``optkit report DIR --format json``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import optkit
from optkit.cli import main
from optkit.comparisons import JSON_KEYS, compare
from optkit.comparisons.bootstrap import (
    EMPTY,
    bootstrap_mean,
    paired_bootstrap,
    unpaired_bootstrap,
)
from optkit.comparisons.measured import group
from optkit.comparisons.profile import performance_profile, plot_profile, profile_costs
from optkit.comparisons.summary import compare_measured
from optkit.comparisons.table import format_comparison
from optkit.errors import ConfigError, ResultsError
from optkit.report import report

# ------------------------------------------------------------------ bootstrap


def test_bootstrap_mean_covers_the_true_mean_about_95_percent() -> None:
    rng = np.random.default_rng(1)
    covered = 0
    trials = 300
    for i in range(trials):
        ci = bootstrap_mean(rng.normal(3.0, 2.0, size=20), resamples=2000, seed=i)
        assert ci.ci_low is not None and ci.ci_high is not None
        assert ci.ci_low <= ci.mean <= ci.ci_high  # type: ignore[operator]
        covered += ci.ci_low <= 3.0 <= ci.ci_high
    # the percentile bootstrap under-covers slightly at n = 20 (~0.92); never near 0.8 or 1
    assert 0.88 <= covered / trials <= 0.98


def test_bootstrap_is_reproducible_and_narrows_with_more_seeds() -> None:
    values = np.random.default_rng(0).normal(size=8)
    assert bootstrap_mean(values, seed=3) == bootstrap_mean(values, seed=3)
    assert bootstrap_mean(values, seed=3) != bootstrap_mean(values, seed=4)
    draws = np.random.default_rng(5).normal(size=64)
    few, many = bootstrap_mean(draws[:4]), bootstrap_mean(draws)
    assert few.width is not None and many.width is not None and many.width < few.width


def test_one_seed_gives_a_degenerate_interval_and_none_gives_nothing() -> None:
    one = bootstrap_mean([2.5])
    assert (one.mean, one.ci_low, one.ci_high) == (2.5, None, None)
    assert one.width is None
    assert bootstrap_mean([]) == EMPTY
    assert bootstrap_mean([float("nan"), float("inf")]) == EMPTY  # non-finite values dropped
    assert paired_bootstrap([3.0], [2.0]).to_json() == {
        "mean": 1.5,
        "ci_low": None,
        "ci_high": None,
    }


def test_paired_ratio_is_narrower_than_unpaired_on_correlated_seeds() -> None:
    rng = np.random.default_rng(0)
    hardness = rng.uniform(50, 500, size=8)  # what a seed shares across methods
    reference = hardness * rng.uniform(0.95, 1.05, size=8)
    method = 0.5 * hardness * rng.uniform(0.95, 1.05, size=8)
    paired = paired_bootstrap(method, reference)
    unpaired = unpaired_bootstrap(method, reference)
    assert paired.mean == pytest.approx(method.mean() / reference.mean())
    assert paired.mean == unpaired.mean
    assert paired.width is not None and unpaired.width is not None
    assert paired.width < unpaired.width / 4
    assert paired.ci_low < 0.5 < paired.ci_high  # type: ignore[operator]


def test_paired_ratio_of_proportional_runs_is_exact() -> None:
    ratio = paired_bootstrap([20.0, 40.0, 60.0], [10.0, 20.0, 30.0])
    assert (ratio.mean, ratio.ci_low, ratio.ci_high) == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError, match="equal lengths"):
        paired_bootstrap([1.0, 2.0], [1.0])


# ------------------------------------------------------------------ targets from rows


def eval_row(obj: str, label: str, seed: int, step: int, value: float, **extra: Any) -> dict:
    return {
        "objective": obj,
        "label": label,
        "seed": seed,
        "event": "eval",
        "sequential_steps": step,
        "grad_evals": 4 * step,
        "wall_s": 0.1 * step,
        "loss": value,
        **extra,
    }


def end_row(obj: str, label: str, seed: int, status: str = "ok", **extra: Any) -> dict:
    return {
        "objective": obj,
        "label": label,
        "seed": seed,
        "event": "end",
        "status": status,
        "directions": {"loss": "min", "acc": "max"},
        **extra,
    }


def curve(obj: str, label: str, seed: int, values: list[float], **extra: Any) -> list[dict]:
    rows = [eval_row(obj, label, seed, 10 * i, v, **extra) for i, v in enumerate(values)]
    return [*rows, end_row(obj, label, seed, **extra)]


def test_reference_targets_are_paired_by_seed_and_reached_is_counted() -> None:
    rows = [
        # the reference ends at 3.0 (seed 0) and 1.0 (seed 1)
        *curve("q", "ref", 0, [9.0, 5.0, 3.0]),
        *curve("q", "ref", 1, [9.0, 2.0, 1.0]),
        # "fast" reaches 3.0 at step 10 on seed 0, never reaches 1.0 on seed 1
        *curve("q", "fast", 0, [9.0, 2.5, 2.0]),
        *curve("q", "fast", 1, [9.0, 1.5, 1.2]),
    ]
    comparison = compare_measured(group(rows, {"target": {"reference": "ref", "metric": "loss"}}))
    by_label = {r.label: r.to_json() for r in comparison.rows}
    ref, fast = by_label["ref"], by_label["fast"]
    assert ref["steps_to_target"] == {
        "mean": 20.0,
        "ci_low": 20.0,
        "ci_high": 20.0,
        "reached": "2/2",
    }
    assert fast["steps_to_target"] == {
        "mean": 10.0,
        "ci_low": None,
        "ci_high": None,
        "reached": "1/2",
    }
    assert fast["grad_evals_to_target"]["mean"] == 40.0
    assert fast["wall_to_target"]["mean"] == pytest.approx(1.0)
    # the ratio pairs seed 0 only (seed 1 was not reached): 10 / 20
    assert fast["ratio_to_reference"] == {"mean": 0.5, "ci_low": None, "ci_high": None}
    assert ref["ratio_to_reference"]["mean"] == 1.0
    assert ref["final"]["mean"] == 2.0 and fast["final"]["mean"] == pytest.approx(1.6)


def test_versus_pairs_every_method_with_the_named_one_by_seed() -> None:
    """``versus``: each row's steps to target over the named method's, on the seeds where
    both reach it (here the reference ends at 3.0 on seed 0 and 1.0 on seed 1)."""
    rows = [
        *curve("q", "ref", 0, [9.0, 5.0, 3.0]),
        *curve("q", "ref", 1, [9.0, 2.0, 1.0]),
        *curve("q", "fast", 0, [9.0, 2.5, 2.0]),  # step 10 on seed 0
        *curve("q", "fast", 1, [9.0, 0.5, 0.4]),  # step 10 on seed 1
        *curve("q", "mid", 0, [9.0, 4.0, 2.9]),  # step 20 on seed 0
        *curve("q", "mid", 1, [9.0, 0.9, 0.8]),  # step 10 on seed 1
    ]
    measured = group(rows, {"target": {"reference": "ref", "metric": "loss"}})
    plain = compare_measured(measured)
    assert all("ratio_to_versus" not in r.to_json() for r in plain.rows)  # only when asked
    comparison = compare_measured(measured, versus="fast")
    by_label = {r.label: r.to_json() for r in comparison.rows}
    assert by_label["mid"]["ratio_to_versus"]["mean"] == pytest.approx((20 + 10) / (10 + 10))
    assert by_label["ref"]["ratio_to_versus"]["mean"] == pytest.approx((20 + 20) / (10 + 10))
    assert by_label["fast"]["ratio_to_versus"]["mean"] == 1.0
    table = format_comparison(comparison)
    assert "| steps / fast |" in table.splitlines()[0]
    assert table.splitlines()[1].count("---") == 10
    with pytest.raises(ConfigError, match=r"--versus 'nope' .* its methods: ref, fast, mid"):
        compare_measured(measured, versus="nope")


def with_acc(rows: list[dict], values: list[float], **extra: Any) -> list[dict]:
    """``rows`` of :func:`curve` with an ``acc`` metric on its eval rows."""
    acc = iter(values)
    return [{**r, **extra, **({"acc": next(acc)} if r["event"] == "eval" else {})} for r in rows]


def test_fixed_value_target_direction_and_phases() -> None:
    rows = [
        # tuning rows never count, even when they would reach the target
        *with_acc(curve("q", "a", 1000, [0, 0]), [0.9, 0.99], phase="tuning"),
        *with_acc(curve("q", "a", 0, [0, 0, 0]), [0.1, 0.6, 0.8]),
        *with_acc(curve("q", "a", 1, [0, 0, 0]), [0.1, 0.3, 0.4]),
        *with_acc(curve("q", "b", 0, [0, 0, 0]), [0.5, 0.7, 0.75], phase="measure"),
    ]
    comparison = compare_measured(group(rows, {"target": {"value": 0.5, "metric": "acc"}}))
    rows_json = comparison.to_json()
    assert [r["label"] for r in rows_json] == ["a", "b"]
    a, b = rows_json
    assert a["steps_to_target"]["reached"] == "1/2" and a["steps_to_target"]["mean"] == 10.0
    assert b["steps_to_target"]["reached"] == "1/1" and b["steps_to_target"]["mean"] == 0.0
    assert a["ratio_to_reference"] is None and b["ratio_to_reference"] is None  # no reference
    assert a["final"]["mean"] == pytest.approx(0.6)  # acc is maximized: final of 0.8 and 0.4
    assert "acc >= 0.5" in format_comparison(comparison)


def test_diverged_seed_has_no_final_and_sets_no_target() -> None:
    rows = [
        *curve("q", "ref", 0, [9.0, 3.0]),
        *[*curve("q", "ref", 1, [9.0, 8.0])[:-1], end_row("q", "ref", 1, status="diverged")],
        *curve("q", "m", 0, [9.0, 2.0]),
        *curve("q", "m", 1, [9.0, 2.0]),
    ]
    comparison = compare_measured(group(rows, {"target": {"reference": "ref", "metric": "loss"}}))
    ref, m = comparison.to_json()
    assert ref["final"] == {"mean": 3.0, "ci_low": None, "ci_high": None}  # seed 1 diverged
    assert m["steps_to_target"]["reached"] == "1/1"  # seed 1 has no target


def test_without_target_section_the_first_label_is_the_reference() -> None:
    rows = [*curve("q", "first", 0, [5.0, 4.0]), *curve("q", "second", 0, [5.0, 3.0])]
    comparison = compare_measured(group(rows))
    spec = comparison.targets["q"]
    assert (spec.reference, spec.metric, spec.implicit) == ("first", "loss", True)
    assert comparison.to_json()[1]["ratio_to_reference"]["mean"] == 1.0


@pytest.mark.parametrize(
    "target",
    [
        {"metric": "loss"},
        {"metric": "loss", "reference": "a", "value": 1.0},
        {"reference": "a"},
        {"metric": "loss", "value": "low"},
    ],
)
def test_malformed_target_sections_are_refused(target: dict) -> None:
    with pytest.raises(ResultsError, match=r"task\.target"):
        compare_measured(group(curve("q", "a", 0, [1.0]), {"target": target}))


# ------------------------------------------------------------------ performance profiles


def test_performance_profile_fractions() -> None:
    costs = {
        "a": {"p1": 10.0, "p2": 40.0, "p3": math.inf},
        "b": {"p1": 20.0, "p2": 20.0, "p3": 5.0},
    }
    taus, rho = performance_profile(costs, taus=np.array([1.0, 1.9, 2.0, 100.0]))
    assert rho["a"].tolist() == pytest.approx([1 / 3, 1 / 3, 2 / 3, 2 / 3])  # p3 never solved
    assert rho["b"].tolist() == pytest.approx([2 / 3, 2 / 3, 1.0, 1.0])
    taus, rho = performance_profile(costs)
    assert taus.tolist() == [1.0, 2.0]


def test_ties_count_for_every_tied_method_and_unsolved_problems_for_none() -> None:
    costs = {"a": {"p": 3.0, "q": math.inf}, "b": {"p": 3.0, "q": math.inf}}
    _, rho = performance_profile(costs, taus=np.array([1.0]))
    assert rho["a"].tolist() == [0.5] and rho["b"].tolist() == [0.5]


# ------------------------------------------------------------------ run directories and the CLI

TASK = {
    "name": "cmp-task",
    "seeds": [0, 1, 2],
    "budget": {"iterations": 25, "eval_every": 1},
    "objectives": [
        {"name": "sphere", "dim": 10, "noise": 0.5},
        {"name": "rosenbrock", "dim": 6, "init_low": -1.0, "init_high": 1.0, "noise": 0.5},
    ],
    "optimizers": [
        {"name": "adam", "lr": 0.03, "label": "slow"},
        {"name": "adam", "lr": 0.1, "label": "fast"},
    ],
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cmp") / "run"
    optkit.run(TASK, out)
    return out


def test_report_json_rows_have_exactly_the_documented_keys(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(run_dir), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)  # stdout is the JSON list and nothing else
    assert [(r["objective"], r["label"]) for r in rows] == [
        ("sphere", "slow"),
        ("sphere", "fast"),
        ("rosenbrock", "slow"),
        ("rosenbrock", "fast"),
    ]
    for row in rows:
        assert (
            list(row)
            == list(JSON_KEYS)
            == [
                "objective",
                "label",
                "tuned",
                "final",
                "steps_to_target",
                "wall_to_target",
                "ratio_to_reference",
                "grad_evals_to_target",
            ]
        )
        assert row["tuned"] == {}
        assert set(row["final"]) == set(row["ratio_to_reference"]) == {"mean", "ci_low", "ci_high"}
        for key in ("steps_to_target", "wall_to_target", "grad_evals_to_target"):
            assert set(row[key]) == {"mean", "ci_low", "ci_high", "reached"}
            assert row[key]["reached"].endswith("/3")
        assert row["final"]["ci_low"] <= row["final"]["mean"] <= row["final"]["ci_high"]
    fast = rows[1]
    assert fast["ratio_to_reference"]["mean"] < 1.0  # lr 0.1 gets to slow's final sooner
    assert not (run_dir / "profile-steps_to_target.png").exists()  # json mode writes nothing


def test_report_versus_adds_the_paired_column_and_refuses_an_unknown_label(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(run_dir), "--format", "json", "--versus", "fast"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["ratio_to_versus"]["mean"] for r in rows[1::2]] == [1.0, 1.0]  # fast vs itself
    assert all(r["ratio_to_versus"]["mean"] > 1.0 for r in rows[0::2])  # slow takes longer
    before = (run_dir / "report.md").read_text() if (run_dir / "report.md").exists() else None
    assert main(["report", str(run_dir), "--versus", "nope"]) != 0
    err = capsys.readouterr().err
    assert "--versus 'nope'" in err and "slow, fast" in err
    after = (run_dir / "report.md").read_text() if (run_dir / "report.md").exists() else None
    assert after == before  # nothing written


def test_report_reads_target_and_tuning_files(run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    copy.mkdir()
    for name in ("results.jsonl", "manifest.json"):
        (copy / name).write_bytes((run_dir / name).read_bytes())
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["task"]["target"] = {"reference": "fast", "metric": "loss"}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    tuning = {"objectives": {"sphere": {"fast": {"chosen": {"lr": 0.1}, "resolved": {}}}}}
    (copy / "tuning.json").write_text(json.dumps(tuning))
    rows = compare(copy).to_json()
    assert rows[1]["tuned"] == {"lr": 0.1} and rows[0]["tuned"] == {}
    assert rows[1]["ratio_to_reference"]["mean"] == 1.0  # fast is now the reference
    # lr 0.03 never gets as low as lr 0.1's final on any seed: nothing to pair
    assert rows[0]["steps_to_target"]["reached"] == "0/3"
    assert rows[0]["ratio_to_reference"] == {"mean": None, "ci_low": None, "ci_high": None}
    assert compare(copy).targets["sphere"].describe(False) == "loss <= fast's final"


def test_plain_report_prints_the_table_and_writes_the_profile(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(run_dir)]) == 0
    printed = capsys.readouterr().out
    assert "| sphere | fast | — | gap <= slow's final |" in printed
    assert "95% percentile-bootstrap CI" in printed
    assert (run_dir / "profile-steps_to_target.png").stat().st_size > 0
    assert "profile-steps_to_target.png" in (run_dir / "report.md").read_text()
    comparison = compare(run_dir)
    assert set(profile_costs(comparison)) == {"slow", "fast"}


def test_one_objective_has_no_profile(tmp_path: Path) -> None:
    comparison = compare_measured(group(curve("q", "a", 0, [2.0, 1.0])))
    assert plot_profile(comparison, tmp_path / "p.png") is None
    assert not (tmp_path / "p.png").exists()


def test_tuning_rows_stay_out_of_the_plain_report(run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    copy.mkdir()
    (copy / "manifest.json").write_bytes((run_dir / "manifest.json").read_bytes())
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    trial = [
        {**r, "seed": 1000, "cell": f"{r['cell']}|tuning", "phase": "tuning"}
        for r in rows
        if r["seed"] == 0
    ]
    text = "".join(json.dumps(r) + "\n" for r in trial + rows)
    (copy / "results.jsonl").write_text(text)
    table, _ = report(copy)
    assert "| sphere | slow | 3 | 0 |" in table  # 3 measured seeds, the tuning seed not counted
    assert compare(copy).to_json() == compare(run_dir).to_json()


def test_run_prints_the_comparison_after_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task = tmp_path / "task.toml"
    task.write_text(
        'name = "t"\nseeds = [0, 1]\nbudget = { iterations = 5 }\n'
        'objective = { name = "sphere", dim = 3 }\noptimizers = [ { name = "adam", lr = 0.1 } ]\n'
    )
    assert main(["run", str(task), "--out", str(tmp_path / "o")]) == 0
    printed = capsys.readouterr().out
    assert "| sphere | adam | — | gap <= adam's final |" in printed
    assert "(2/2) | 1 [1, 1] |" in printed


def test_a_float32_tie_with_the_target_counts_as_reached() -> None:
    from optkit.comparisons.targets import reaches

    target = 0.123456789
    assert reaches(target * (1 + 3e-7), target, maximize=False)  # float32 rounding: a tie
    assert not reaches(target * (1 + 1e-4), target, maximize=False)
    assert reaches(-target * (1 + 3e-7), -target, maximize=True)
    assert not reaches(0.9 * target, target, maximize=True)
