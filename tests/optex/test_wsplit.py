"""``workers = W`` and ``batches_per_point = "auto"``: W gradients per round split as P points
x K minibatch gradients per point, the split given or chosen from the measured gradient noise
scale; bad input refused before anything runs (issue 19, point 3 and "Bad input")."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from optkit_optex.auto_split import AUTO_ROUNDS, NoiseMeter, choose_batches_per_point
from optkit_optex.config import OptExConfig

import optkit
from optkit.cli import main
from optkit.diagnose.noise_scale import fit_noise_scale
from optkit.errors import ConfigError
from optkit.oracle import Oracle
from optkit.registry import get_registry
from optkit.results import load_rows
from optkit.tasks import check_task, load_task

from .test_torch_api_batched import flat, loss_fn, minibatches, mlp

REG = get_registry()
TASKS = Path(__file__).resolve().parents[2] / "tasks"


# --------------------------------------------------------------------------- the config
@pytest.mark.parametrize(
    ("options", "split"),
    [
        ({"workers": 8, "batches_per_point": 2}, (4, 2)),
        ({"workers": 8, "parallelism": 2}, (2, 4)),
        ({"workers": 8}, (8, 1)),
        ({"workers": 6, "parallelism": 3, "batches_per_point": 2}, (3, 2)),
        ({"parallelism": 3}, (3, 1)),
        ({}, (5, 1)),
        ({"workers": 8, "batches_per_point": "auto"}, (1, 8)),  # measuring first
    ],
)
def test_the_split_is_resolved_from_two_of_the_three_keys(
    options: dict[str, Any], split: tuple[int, int]
) -> None:
    config = OptExConfig.create(**options)
    assert config.split == split
    assert config.round_size == options.get("workers", split[0] * split[1])
    assert OptExConfig.create(**config.options()) == config  # the flat keys round-trip


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"workers": 8, "batches_per_point": 3},
            r"workers = 8 is not divisible by batches_per_"
            r"point = 3.*valid batches_per_point for 8 work"
            r"ers: 1, 2, 4, 8",
        ),
        ({"workers": 8, "batches_per_point": 16}, r"workers = 8 is not divisible by batches_per"),
        ({"workers": 8, "parallelism": 3}, r"workers = 8 is not divisible by parallelism = 3"),
        (
            {"workers": 8, "parallelism": 2, "batches_per_point": 2},
            r"parallelism x batches_per_point = 2 x 2 = 4 but workers = 8",
        ),
        ({"batches_per_point": "auto"}, r"batches_per_point = 'auto' needs workers = W"),
        (
            {"workers": 8, "parallelism": 2, "batches_per_point": "auto"},
            r"batches_per_point = 'auto' chooses parallelism = workers / K itself; leave parallelism out",
        ),
        ({"workers": 0}, r"workers must be an integer >= 1"),
        ({"workers": 8, "batches_per_point": 0}, r"batches_per_point must be an integer >= 1"),
        (  # the registry's type check words it its own way
            {"batches_per_point": "big"},
            r"batches_per_point'? (of optimizer 'optex' )?must be (an integer >= 1 or 'auto'"
            r"|int \| 'auto')",
        ),
    ],
)
def test_bad_splits_are_refused_naming_the_keys(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=rf"^optimizer 'optex': {message}"):
        OptExConfig.create(**options)
    with pytest.raises(ConfigError, match=message):
        REG.create("optimizer", {"name": "optex", **options})
    with pytest.raises(ConfigError, match=rf"^optkit.OptEx: {message}"):
        optkit.OptEx([torch.nn.Parameter(torch.zeros(3))], **options)


TASK = """
name = "wsplit-check"
seeds = [0]
budget = {{ iterations = 3 }}
objective = {{ name = "sphere", dim = 10 }}
optimizers = [ {{ name = "optex", base = "adam", {keys} }} ]
"""


def test_optkit_check_refuses_a_bad_split_with_exit_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(TASK.format(keys="workers = 8, batches_per_point = 3"))
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "workers = 8 is not divisible by batches_per_point = 3" in err
    assert "Traceback" not in err
    good = tmp_path / "good.toml"
    good.write_text(TASK.format(keys='workers = 8, batches_per_point = "auto"'))
    assert main(["check", str(good)]) == 0


# --------------------------------------------------------------------------- the rule
@pytest.mark.parametrize(
    ("scale", "k"),
    [
        (2.96, 4),  # MNIST MLP at batch 32: B_simple ~ 95 -> K = 4 (x 32 = 128)
        (0.34, 1),  # the same at batch 256
        (6.0, 8),  # log2 6 = 2.58: nearer to 8 than to 4
        (5.0, 4),
        (1.41, 1),  # just below sqrt(2), the midpoint of 1 and 2 on the log scale
        (1.42, 2),
        (100.0, 8),  # clamped to W
        (math.inf, 8),  # unresolved |G|^2: noise-dominated
        (0.0, 1),  # no noise
        (math.nan, 1),
    ],
)
def test_k_is_the_divisor_of_w_nearest_to_the_noise_scale(scale: float, k: int) -> None:
    assert choose_batches_per_point(scale, 8) == k
    assert choose_batches_per_point(scale, 1) == 1


def test_the_meter_is_the_diagnose_estimator_and_recovers_a_known_noise_scale() -> None:
    """Gradients ``G + xi`` with ``xi ~ N(0, s^2 I_d)``: per minibatch ``tr(Sigma) = d s^2``,
    so ``B_simple / batch = d s^2 / |G|^2`` (here 4.0)."""
    gen = torch.Generator().manual_seed(0)
    d, w = 20000, 8
    true = torch.full((d,), 0.5)  # |G|^2 = 5000
    s = math.sqrt(4.0 * 5000 / d)
    meter = NoiseMeter(w)
    rounds = [true + s * torch.randn(w, d, generator=gen) for _ in range(AUTO_ROUNDS)]
    for grads in rounds:
        meter.add(grads)
    assert meter.done
    small = [float(g.square().sum(1).mean()) for g in rounds]
    big = [float(g.mean(0).square().sum()) for g in rounds]
    want = fit_noise_scale({1: small, w: big}, resamples=0).b_simple
    assert meter.noise_scale() == pytest.approx(want, rel=1e-6)
    assert meter.noise_scale() == pytest.approx(4.0, rel=0.15)
    assert math.isnan(NoiseMeter(1).noise_scale())


# --------------------------------------------------------------------------- the optimizer
def run(
    spec: dict[str, Any], iters: int, noise: float, fn: str = "sphere"
) -> tuple[torch.Tensor, Oracle, list[dict[str, float]]]:
    obj = REG.create("objective", {"name": fn, "dim": 200, "noise": noise})
    obj.prepare(torch.device("cpu"), torch.float32)
    opt = REG.create("optimizer", {"base": "adam", "base_config": {"lr": 0.05}, **spec})
    gen = torch.Generator().manual_seed(0)
    params = obj.init_params(gen)
    state = opt.init(params)
    oracle = Oracle(obj, REG.create("executor", {"name": "vmap"}), gen)
    extras = []
    for _ in range(iters):
        params, state, info = opt.step(params, state, oracle)
        extras.append(info.extras)
    return params["x"], oracle, extras


def test_workers_with_one_key_is_the_same_optex_as_the_explicit_split() -> None:
    a, o1, _ = run({"name": "optex", "workers": 8, "batches_per_point": 2}, 6, noise=1.0)
    b, o2, _ = run({"name": "optex", "parallelism": 4, "batches_per_point": 2}, 6, noise=1.0)
    assert torch.equal(a, b)
    assert o1.grad_evals == o2.grad_evals == 6 * 8


@pytest.mark.parametrize(
    ("noise", "k"),
    [(0.0, 1), (50.0, 8)],
    ids=["exact-gradients-all-points", "noise-dominated-all-batches"],
)
@pytest.mark.parametrize("fused", [True, False])
def test_auto_measures_then_splits_and_records_the_split(noise: float, k: int, fused: bool) -> None:
    spec = {"name": "optex", "workers": 8, "batches_per_point": "auto", "fused": fused}
    _, oracle, extras = run(spec, 7, noise=noise)
    assert (oracle.sequential_steps, oracle.grad_evals) == (7, 7 * 8)
    for row in extras[:AUTO_ROUNDS]:  # data-parallel measuring rounds: 1 point x 8 batches
        assert (row["optex_points"], row["optex_batches_per_point"]) == (1.0, 8.0)
    for row in extras[AUTO_ROUNDS:]:
        assert (row["optex_points"], row["optex_batches_per_point"]) == (8 / k, float(k))
        assert choose_batches_per_point(row["optex_noise_scale"], 8) == k
    assert math.isnan(extras[0]["optex_noise_scale"])


def test_auto_picks_a_middle_split_at_a_moderate_noise_and_keeps_paths_equal() -> None:
    """Noise 10 on the 200-dim sphere from its start: ``B = d s^2 / |G|^2`` is about 3
    minibatches, so neither extreme; fused and generic (with saved states for ``best``)
    give the same iterates."""
    spec = {"name": "optex", "workers": 8, "batches_per_point": "auto", "next_iterate": "best"}
    fused, _, extras = run({**spec, "fused": True}, 8, noise=10.0)
    generic, _, _ = run({**spec, "fused": False}, 8, noise=10.0)
    assert torch.equal(fused, generic)
    k = extras[-1]["optex_batches_per_point"]
    assert k in (2.0, 4.0), extras[-1]
    assert extras[-1]["optex_points"] == 8 / k


def test_the_measuring_rounds_are_data_parallel_rounds() -> None:
    ours, _, _ = run({"name": "optex", "workers": 8, "batches_per_point": "auto"}, 3, noise=3.0)
    dp, _, _ = run({"name": "data_parallel", "parallelism": 8}, 3, noise=3.0)
    torch.testing.assert_close(ours, dp)


def drop_in(batched: bool, steps: int = 6) -> tuple[torch.nn.Module, optkit.OptEx]:
    model = mlp()
    opt = optkit.OptEx(model.parameters(), workers=4, batches_per_point="auto", lr=0.01)
    data = minibatches(steps * 4)
    for t in range(steps):
        batches = data[4 * t : 4 * (t + 1)]
        if batched:
            opt.step_batched(model, loss_fn, batches)
            continue
        feed = iter(batches)

        def closure(feed: Any = feed) -> torch.Tensor:
            opt.zero_grad()
            loss = loss_fn(model, next(feed))
            loss.backward()
            return loss

        opt.step(closure)
    return model, opt


def test_the_drop_in_runs_auto_on_both_paths() -> None:
    m_seq, opt = drop_in(False)
    m_bat, opt_bat = drop_in(True)
    assert opt.workers == 4 and opt.parallelism * opt.batches_per_point == 4
    assert (opt.parallelism, opt.batches_per_point) == (
        opt_bat.parallelism,
        opt_bat.batches_per_point,
    )
    torch.testing.assert_close(flat(m_bat), flat(m_seq), rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match=r"needs workers = parallelism x batches_per_point"):
        opt.step_batched(m_seq, loss_fn, minibatches(3))


# --------------------------------------------------------------------------- the study tasks
@pytest.mark.parametrize(
    ("name", "seeds"),
    [("study-optex-wsplit-mnist-cpu", 3), ("study-optex-wsplit-fashion-mnist", 5)],
)
def test_the_w_split_study_tasks_check_with_every_split_of_8(name: str, seeds: int) -> None:
    task = load_task(TASKS / f"{name}.toml")
    assert not check_task(task).skipped
    assert len(task.seeds) == seeds and task.tuning is not None and task.target is not None
    labels = {spec.label for spec in task.optimizers}
    splits = {f"optex-P{8 // k}xK{k}" for k in (1, 2, 4, 8)}
    assert {"adam", "data_parallel-W8", "optex-mean-P8", "optex-auto", *splits} <= labels
    assert len(task.objectives) == 2  # two batch sizes around the noise scale


def test_a_run_records_the_split_in_its_rows(tmp_path: Path) -> None:
    """The ``eval`` rows of a run carry the split each round ran and the measured noise."""
    task = tmp_path / "auto.toml"
    task.write_text(
        TASK.format(keys='workers = 4, batches_per_point = "auto"').replace(
            "iterations = 3", "iterations = 5, eval_every = 1"
        )
    )
    summary = optkit.run(task, out=tmp_path / "run")
    assert summary.cells_run == 1 and not summary.cells_failed
    rows = [r for r in load_rows(summary.out) if r.get("event") == "eval" and r["iteration"] > 0]
    rows.sort(key=lambda r: r["iteration"])
    # exact gradients: no noise measured, so K = 1 (4 points) after the 3 measuring rounds
    assert [r["optex_batches_per_point"] for r in rows] == [4.0, 4.0, 4.0, 1.0, 1.0]
    assert [r["optex_points"] for r in rows] == [1.0, 1.0, 1.0, 4.0, 4.0]
    assert rows[-1]["optex_noise_scale"] == 0.0
    assert rows[-1]["grad_evals"] == 5 * 4
