"""``EstimatorConfig`` / ``OptExConfig``: every option validated in one place, with messages
naming the key and the valid values, and passed whole to the estimator, the registered
optimizer and the drop-in."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from optkit_optex.config import (
    ESTIMATOR_KEYS,
    OPTION_KEYS,
    EstimatorConfig,
    OptExConfig,
)
from optkit_optex.estimator import KernelGradientEstimator
from optkit_optex.optimizer import OptEx as RegisteredOptEx

import optkit
from optkit.config import config_schema
from optkit.errors import ConfigError
from optkit.registry import get_registry

REG = get_registry()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"history": 1}, r"history \(T0\) must be >= 2 \(an integer\), got 1"),
        ({"history": 2.5}, r"history \(T0\) must be >= 2 \(an integer\), got 2.5"),
        ({"kernel": "laplace"}, "unknown kernel 'laplace'; valid kernels: matern52, "),
        ({"fit": "loo"}, "fit must be one of 'heuristic', 'mll', 'fixed', 'forward', 'reference'"),
        ({"fit": "fixed"}, "fit = 'fixed' needs a lengthscale"),
        ({"lengthscale": 0.0}, "lengthscale must be a number > 0, got 0.0"),
        ({"lengthscale": "1"}, "lengthscale must be a number > 0, got '1'"),
        ({"noise": -1e-3}, "noise must be a number >= 0, got -0.001"),
        ({"fit_coords": 0}, "fit_coords must be an integer >= 1, got 0"),
        ({"refit_every": 1.5}, "refit_every must be an integer >= 1, got 1.5"),
        ({"fit_lag": -1}, "fit_lag must be an integer >= 0, got -1"),
        ({"fit_lag": True}, "fit_lag must be an integer >= 0, got True"),
        ({"mll_steps": 0}, "mll_steps must be an integer >= 1, got 0"),
        ({"seed": "zero"}, "seed must be an integer, got 'zero'"),
        ({"effective_dim": 0}, r"effective_dim must be an integer >= 1 \(at most the parameter"),
        ({"noise_estimate": "loo"}, "noise_estimate must be 'fit' or 'spread', got 'loo'"),
        ({"noise_estimate": "spread", "noise": 0.1}, "noise_estimate = 'spread' sets the noise"),
        ({"fit": "reference", "noise": 0.1}, "fit = 'reference' uses the released"),
    ],
)
def test_estimator_config_refuses_a_bad_value_naming_the_key(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=rf"^optimizer 'optex': {message}"):
        EstimatorConfig(**options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"parallelism": 0}, "parallelism must be >= 1, got 0"),
        ({"next_iterate": "first"}, "next_iterate must be 'last' or 'best', got 'first'"),
        ({"proxy_updates_state": 1}, "proxy_updates_state must be true or false, got 1"),
        ({"batches_per_point": 0}, "batches_per_point must be an integer >= 1"),
        ({"stop_variance": 0.0}, r"stop_variance must be a number in \(0, 1\]"),
        ({"stop_variance": True}, r"stop_variance must be a number in \(0, 1\]"),
        ({"estimator": {"history": 3}}, "estimator must be an EstimatorConfig"),
    ],
)
def test_optex_config_refuses_a_bad_value_naming_the_key(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        OptExConfig(**options)


def test_create_names_its_owner_and_suggests_close_keys() -> None:
    with pytest.raises(ConfigError, match=r"^optkit.OptEx: fit must be one of"):
        OptExConfig.create("optkit.OptEx", fit="loo")
    with pytest.raises(ConfigError, match=r"unknown option 'lenghtscale'. Did you mean 'lengt"):
        OptExConfig.create("optkit.OptEx", lenghtscale=0.1)
    config = OptExConfig.create(parallelism=3, history=7, fit="forward", stop_variance=0.5)
    assert config == OptExConfig(3, stop_variance=0.5, estimator=EstimatorConfig(7, fit="forward"))
    assert OptExConfig.create(**config.options()) == config


def test_configs_are_frozen_and_report_when_states_are_saved() -> None:
    config = OptExConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.parallelism = 3  # type: ignore[misc]
    assert config.saves_states  # the default next_iterate is "best"
    assert not OptExConfig(next_iterate="last").saves_states
    assert OptExConfig(next_iterate="last", stop_variance=0.5).saves_states
    assert not OptExConfig(stop_variance=0.5, proxy_updates_state=False).saves_states


def test_the_registered_optimizer_lists_every_option_with_the_configs_defaults() -> None:
    """The task-file keys are the configs' fields: one source for names, types, defaults."""
    schema = config_schema(RegisteredOptEx)
    defaults = OptExConfig().options()
    assert set(OPTION_KEYS) <= set(schema)
    assert {k: schema[k].default for k in OPTION_KEYS} == defaults
    assert set(schema) - set(OPTION_KEYS) == {
        "base",
        "base_config",
        "fused",
        "cuda_graph",
        "device_solve",
        "shared_batches",
        "config",
    }
    with pytest.raises(ConfigError, match=r"key 'lengthscale' of optimizer 'optex' must be float"):
        REG.create("optimizer", {"name": "optex", "lengthscale": "big"})
    with pytest.raises(ConfigError, match=r"unknown key 'lenghtscale' .* Did you mean 'lengths"):
        REG.create("optimizer", {"name": "optex", "lenghtscale": 0.1})


def test_the_config_is_passed_whole() -> None:
    opt = REG.create("optimizer", {"name": "optex", "parallelism": 3, "fit": "forward"})
    assert opt.config == OptExConfig.create(parallelism=3, fit="forward")
    whole = RegisteredOptEx(config=opt.config)
    assert whole.config is opt.config and whole.parallelism == 3
    with pytest.raises(ConfigError, match=r"either as config .* or as keys, not both"):
        RegisteredOptEx(config=opt.config, parallelism=2)
    state = opt.init({"x": torch.zeros(6)})
    assert state.estimator.config is opt.config.estimator

    estimator = EstimatorConfig(history=9, effective_dim=5)
    assert KernelGradientEstimator(6, estimator).config is estimator
    with pytest.raises(ConfigError, match=r"effective_dim = 5 is larger .* \(4\)"):
        KernelGradientEstimator(4, estimator)
    assert set(ESTIMATOR_KEYS) == {f.name for f in dataclasses.fields(EstimatorConfig)}


def test_the_drop_in_takes_a_config_whole_or_keywords_not_both() -> None:
    p = [torch.nn.Parameter(torch.zeros(3))]
    config = OptExConfig(parallelism=2, next_iterate="best")
    opt = optkit.OptEx(p, base=torch.optim.SGD, config=config, lr=0.1)
    assert opt.config is config and opt.base.defaults["lr"] == 0.1
    assert optkit.OptEx(p, lr=0.1).parallelism == 4  # the drop-in's own default
    with pytest.raises(ConfigError, match=r"either as config= or as keywords, not both"):
        optkit.OptEx(p, config=config, parallelism=3)
    with pytest.raises(ConfigError, match=r"bad keyword for Adam.*did you mean lengthscale"):
        optkit.OptEx(p, lenghtscale=0.1)
