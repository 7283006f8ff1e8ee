"""``optkit diagnose noise``: the B_simple estimator against analytic truth, the SizedBatches
capability of the objectives, and the command on real tasks."""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from optkit.cli import main
from optkit.diagnose.gradients import minibatch_sq_norms
from optkit.diagnose.noise import default_sizes, diagnose_noise, format_noise
from optkit.diagnose.noise_scale import fit_noise_scale, reading, step_saving
from optkit.errors import ConfigError
from optkit.hookspecs import hookimpl
from optkit.interfaces import Objective, Params, sized_batches
from optkit.plugins import load
from optkit.registry import Registry, get_registry
from optkit.tasks import load_task

# ------------------------------------------------------------------ the estimator


def test_two_sizes_give_the_appendix_a_estimators() -> None:
    rng = np.random.default_rng(0)
    small, big = rng.uniform(5, 9, size=16), rng.uniform(1, 3, size=16)
    est = fit_noise_scale({4: small, 64: big}, resamples=0)
    g_small, g_big = small.mean(), big.mean()
    grad_sq = (64 * g_big - 4 * g_small) / (64 - 4)
    trace = (g_small - g_big) / (1 / 4 - 1 / 64)
    assert est.grad_sq == pytest.approx(grad_sq) and est.trace_sigma == pytest.approx(trace)
    assert est.b_simple == pytest.approx(trace / grad_sq)
    assert est.ci_low is None and est.sizes == (4, 64) and est.draws == 16


def test_the_line_through_several_sizes_recovers_exact_means() -> None:
    grad_sq, trace = 2.0, 300.0  # B_simple = 150
    norms = {b: np.full(8, grad_sq + trace / b) for b in (8, 32, 128, 512)}
    est = fit_noise_scale(norms)
    assert est.b_simple == pytest.approx(150.0)
    assert est.ci_low == pytest.approx(150.0) and est.ci_high == pytest.approx(150.0)


def test_unresolved_gradient_and_bad_input() -> None:
    est = fit_noise_scale({1: [10.0, 10.0], 2: [5.0, 5.0]})  # pure noise: |G|^2 = 0
    assert math.isinf(est.b_simple) and "not resolved" in reading(32, est)
    with pytest.raises(ValueError, match="two batch sizes"):
        fit_noise_scale({4: [1.0]})
    assert default_sizes(1) == [1, 4] and default_sizes(32) == [8, 32, 128]


def test_reading_places_the_batch_size() -> None:
    est = fit_noise_scale({8: [20.0, 20.0], 32: [12.5, 12.5]})  # |G|^2 = 10, tr = 80
    assert est.b_simple == pytest.approx(8.0)
    assert "below B_simple (x4)" in reading(2, est) and "pays" in reading(2, est)
    assert "near B_simple (x1)" in reading(8, est)
    assert "above B_simple (x8)" in reading(64, est) and "saturates" in reading(64, est)
    # S(B) = S_min (1 + B_simple / B): doubling at B = B_simple goes from 2 to 1.5 S_min
    assert step_saving(8, 8.0) == pytest.approx(0.25)
    assert "save ~25%" in reading(8, est) and "save ~6%" in reading(64, est)


# ------------------------------------------------------------------ a noisy quadratic, known truth


@pytest.fixture(scope="module")
def registry() -> Registry:
    return get_registry()


def test_noisy_sphere_estimate_matches_the_analytic_noise_scale(registry: Registry) -> None:
    """sphere: G = 2x and one example's noise is N(0, s^2 I_d), so tr(Sigma) = d s^2 and
    B_simple = d s^2 / (4 |x|^2) exactly."""
    dim, noise = 40, 20.0
    obj = registry.create("objective", {"name": "sphere", "dim": dim, "noise": noise})
    obj.prepare(torch.device("cpu"), torch.float64)
    gen = torch.Generator().manual_seed(0)
    params = obj.init_params(gen)
    grad_sq = 4 * float((params["x"] ** 2).sum())
    truth = dim * noise**2 / grad_sq
    norms = {b: minibatch_sq_norms(obj, params, gen, b, 400) for b in (1, 4, 16)}
    est = fit_noise_scale(norms)
    assert est.trace_sigma == pytest.approx(dim * noise**2, rel=0.1)
    assert est.grad_sq == pytest.approx(grad_sq, rel=0.15)
    assert est.b_simple == pytest.approx(truth, rel=0.15)
    assert est.ci_low is not None and est.ci_high is not None
    assert est.ci_low < truth < est.ci_high


def test_sized_batches_contract_on_the_synthetic_objectives(registry: Registry) -> None:
    obj = registry.create("objective", {"name": "sphere", "dim": 5000, "noise": 3.0})
    obj.prepare(torch.device("cpu"), torch.float64)
    assert sized_batches(obj) and obj.batch_size == 1  # type: ignore[attr-defined]
    x = obj.init_params(torch.Generator().manual_seed(0))
    one = obj.sample_batch(torch.Generator().manual_seed(1), x)
    same = obj.sample_batch_of_size(torch.Generator().manual_seed(1), x, 1)  # type: ignore[attr-defined]
    assert torch.equal(one, same)
    sixteen = obj.sample_batch_of_size(torch.Generator().manual_seed(2), x, 16)  # type: ignore[attr-defined]
    assert float(sixteen.std()) == pytest.approx(3.0 / 4.0, rel=0.05)  # the mean of 16 draws


class Deterministic(Objective):
    """An objective without SizedBatches (for the refusal)."""

    name: ClassVar[str] = "test_no_sizes"
    summary: ClassVar[str] = "test"

    def init_params(self, generator: torch.Generator) -> Params:
        return {"x": torch.ones(3)}

    def loss(self, params: Params, batch: object) -> torch.Tensor:
        return (params["x"] ** 2).sum()

    def evaluate(self, params: Params) -> dict[str, float]:
        return {"loss": float((params["x"] ** 2).sum())}


@pytest.fixture(scope="module")
def with_unsized() -> Registry:
    class Hooks:
        @hookimpl
        def optkit_register_objectives(self, register):  # type: ignore[no-untyped-def]
            register(Deterministic)

    return Registry(load(extra_plugins=[("unsized", Hooks())]))


def test_an_objective_without_sized_batches_is_named(with_unsized: Registry) -> None:
    only = {
        "name": "t",
        "seeds": [0],
        "budget": {"iterations": 2},
        "objective": {"name": "test_no_sizes", "label": "mine"},
        "optimizers": [{"name": "sgd", "lr": 0.1}],
    }
    with pytest.raises(ConfigError, match=r"objective 'test_no_sizes' .*SizedBatches"):
        diagnose_noise(load_task(only), registry=with_unsized)
    mixed = {
        **only,
        "objective": None,
        "objectives": [
            {"name": "test_no_sizes", "label": "mine"},
            {"name": "sphere", "dim": 4, "noise": 1.0},
        ],
    }
    del mixed["objective"]
    reports = diagnose_noise(load_task(mixed), draws=4, registry=with_unsized)
    text = format_noise(reports)
    assert "mine: skipped: objective 'test_no_sizes'" in text
    assert "sphere (task batch size 1):" in text and "B_simple = " in text


TASK = """
name = "noise-task"
seeds = [0]
budget = { iterations = 10 }
objectives = [ { name = "sphere", dim = 20, noise = 5.0 }, { name = "rosenbrock", dim = 4 } ]
optimizers = [ { name = "adam", lr = 0.1 } ]
"""


def test_diagnose_noise_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "task.toml"
    path.write_text(TASK)
    assert main(["diagnose", "noise", str(path), "--draws", "8"]) == 0
    out = capsys.readouterr().out
    assert "sphere (task batch size 1):" in out
    assert "start (iteration 0): B_simple = " in out
    assert "middle (iteration 5, after 'adam'): B_simple = " in out
    assert "rosenbrock (task batch size 1):" in out and "deterministic gradients" in out
    assert main(["diagnose", "noise", str(path), "--sizes", "4,x"]) == 2
    assert "--sizes: expected integers" in capsys.readouterr().err
    assert main(["diagnose", "noise", str(path), "--sizes", "4"]) == 2
    assert "at least two distinct sizes" in " ".join(capsys.readouterr().err.split())


# ------------------------------------------------------------------ real objectives


@pytest.mark.vision
def test_mnist_noise_scale_and_batch_contract(registry: Registry) -> None:
    spec = {"name": "mnist", "model": "mlp", "batch_size": 16, "train_size": 512}
    obj = registry.create("objective", {**spec, "eval_train_size": 64, "eval_test_size": 64})
    obj.prepare(torch.device("cpu"), torch.float32)
    params = obj.init_params(torch.Generator().manual_seed(0))
    a = obj.sample_batch(torch.Generator().manual_seed(3), params)
    b = obj.sample_batch_of_size(torch.Generator().manual_seed(3), params, 16)  # type: ignore[attr-defined]
    assert torch.equal(a, b) and a.shape == (16,)
    task = load_task(
        {
            "name": "mnist-noise",
            "seeds": [0],
            "budget": {"iterations": 8},
            "objective": {**spec, "eval_train_size": 64, "eval_test_size": 64},
            "optimizers": [{"name": "adam", "lr": 0.003}],
            "executor": {"name": "vmap"},
        }
    )
    (report,) = diagnose_noise(task, draws=8)
    assert report.batch_size == 16 and set(report.at) == {"start", "middle"}
    for _, est in report.at.values():
        assert est is not None and est.sizes == (4, 16, 64)
        assert est.trace_sigma > 0 and est.grad_sq > 0 and 1 < est.b_simple < 10_000


def test_shakespeare_batches_have_a_chosen_size(registry: Registry) -> None:
    obj = registry.create(
        "objective",
        {
            "name": "shakespeare",
            "context": 8,
            "width": 8,
            "layers": 1,
            "heads": 1,
            "batch_size": 4,
            "train_chars": 5000,
            "eval_windows": 4,
        },
    )
    obj.prepare(torch.device("cpu"), torch.float32)
    assert sized_batches(obj)
    params = obj.init_params(torch.Generator().manual_seed(0))
    a = obj.sample_batch(torch.Generator().manual_seed(3), params)
    b = obj.sample_batch_of_size(torch.Generator().manual_seed(3), params, 4)  # type: ignore[attr-defined]
    assert torch.equal(a, b)
    norms = minibatch_sq_norms(obj, params, torch.Generator().manual_seed(1), 32, 3)
    assert norms.shape == (3,) and np.all(norms > 0)


def test_dqn_replay_batches_have_a_chosen_size_and_a_noise_scale(registry: Registry) -> None:
    """DQN's sized draw samples the replay buffer as it stands (no env steps); its
    ``sample_batch`` is the env steps of one evaluation, then the same draw; and ``optkit
    diagnose noise`` measures the noise (tr Sigma > 0) and the gradient (|G|^2 > 0) on real
    CartPole transitions."""
    spec = {"name": "dqn", "learning_starts": 64, "batch_size": 8, "target_update": 50}
    obj = registry.create("objective", spec)
    obj.prepare(torch.device("cpu"), torch.float32)
    assert sized_batches(obj)
    with pytest.raises(ConfigError, match="init_params before sample_batch_of_size"):
        obj.sample_batch_of_size(torch.Generator(), {}, 8)  # type: ignore[attr-defined]
    params = obj.init_params(torch.Generator().manual_seed(0))
    filled = obj.buffer.size  # type: ignore[attr-defined]
    big = obj.sample_batch_of_size(torch.Generator().manual_seed(3), params, 32)  # type: ignore[attr-defined]
    assert big["obs"].shape[0] == big["action"].shape[0] == big["target"].shape[0] == 32
    assert obj.buffer.size == filled  # type: ignore[attr-defined]  # no interaction
    obj.sample_batch(torch.Generator().manual_seed(3), params)
    assert obj.buffer.size > filled  # type: ignore[attr-defined]  # sample_batch steps the env
    with pytest.raises(ConfigError, match="size >= 1"):
        obj.sample_batch_of_size(torch.Generator(), params, 0)  # type: ignore[attr-defined]
    task = load_task(
        {
            "name": "dqn-noise",
            "seeds": [0],
            "budget": {"iterations": 10},
            "objective": spec,
            "optimizers": [{"name": "adam", "lr": 0.001}],
            "executor": {"name": "vmap"},
        }
    )
    (report,) = diagnose_noise(task, draws=8)
    assert report.batch_size == 8
    for _, est in report.at.values():
        assert est is not None and est.trace_sigma > 0 and est.grad_sq > 0
