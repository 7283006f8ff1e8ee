"""Search-space declaration, validation errors, and the unit-cube encoding."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from typing import Any

import pytest
import torch
from optkit_hpo.space import check_against_specs, config_key, parse_space

import optkit
from optkit.errors import ConfigError

MIXED: dict[str, Any] = {
    "optimizer.lr": {"low": 1e-4, "high": 1e-1, "log": True},
    "optimizer.betas.0": {"low": 0.5, "high": 0.99},
    "objective.dim": {"type": "int", "low": 2, "high": 8},
    "optimizer.rank": {"type": "int", "low": 1, "high": 64, "log": True},
    "optimizer.name": {"choices": ["adam", "sgd", "rmsprop"]},
    "objective.layers": {"type": "layers", "num_layers": 6},
    "objective.top": {"type": "layers", "num_layers": 7, "k": 3},
    "objective.mask": {"type": "layers", "num_layers": 4, "k": 2, "output": "mask"},
}


@pytest.mark.parametrize(
    ("space", "needle"),
    [
        ({}, "non-empty table"),
        ({"lr": {"low": 0.1, "high": 1.0}}, "'lr'"),
        ({"optimizer.": {"low": 0.1, "high": 1.0}}, "'optimizer.'"),
        ({"optimizer.lr": 0.1}, "'optimizer.lr': must be a table"),
        ({"optimizer.lr": {"type": "bool", "low": 0, "high": 1}}, "unknown type 'bool'"),
        ({"optimizer.lr": {"low": 0.1, "high": 1.0, "scale": "log"}}, "unknown option(s) scale"),
        ({"optimizer.lr": {"high": 1.0}}, "needs 'low'"),
        ({"optimizer.lr": {"low": 0.1, "high": 0.1}}, "'optimizer.lr': empty range"),
        ({"optimizer.lr": {"low": 1.0, "high": 0.1}}, "'optimizer.lr': inverted range"),
        ({"optimizer.lr": {"low": 0.0, "high": 0.1, "log": True}}, "positive range"),
        ({"optimizer.lr": {"low": -1.0, "high": 0.1, "log": True}}, "positive range"),
        ({"optimizer.lr": {"low": 0.1, "high": 1.0, "log": "yes"}}, "'log' must be true"),
        ({"optimizer.lr": {"low": "a", "high": 1.0}}, "finite number"),
        ({"objective.dim": {"type": "int", "low": 2.5, "high": 8}}, "must be an integer"),
        ({"objective.dim": {"type": "int", "low": 8, "high": 2}}, "inverted range"),
        ({"objective.dim": {"type": "int", "low": 0, "high": 8, "log": True}}, "positive"),
        ({"optimizer.name": {"choices": ["adam"]}}, "at least 2 values"),
        ({"optimizer.name": {"choices": ["adam", "adam"]}}, "duplicate choices"),
        ({"optimizer.name": {"choices": ["adam", [1]]}}, "strings, numbers or booleans"),
        ({"objective.layers": {"type": "layers", "num_layers": 1}}, "'num_layers'"),
        ({"objective.layers": {"type": "layers", "num_layers": 4, "k": 4}}, "'k'"),
        ({"objective.layers": {"type": "layers", "num_layers": 4, "k": 0}}, "'k'"),
        ({"objective.layers": {"num_layers": 4, "output": "bits"}}, "'output'"),
        (
            {"optimizer.betas": {"choices": [0, 1]}, "optimizer.betas.0": {"low": 0, "high": 1}},
            "overlap",
        ),
    ],
)
def test_invalid_spaces_raise_config_error_naming_the_parameter(space: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_space(space, "hyperoptimizer 'x'")
    message = str(info.value)
    assert needle in message
    assert message.startswith("hyperoptimizer 'x'")


def test_type_is_inferred_and_widths_add_up() -> None:
    space = parse_space(MIXED, "t")
    types = [p.type for p in space.params]
    assert types == ["float", "float", "int", "int", "categorical", "layers", "layers", "layers"]
    assert space.dims == 1 + 1 + 1 + 1 + 3 + 6 + 7 + 4
    assert space.categorical_combinations() == 3


def test_decode_encode_round_trip_and_projection() -> None:
    space = parse_space(MIXED, "t")
    gen = torch.Generator().manual_seed(0)
    points = space.sample(200, gen)
    for u in points:
        config = space.decode(u)
        canonical = space.encode(config)
        assert space.decode(canonical) == config
        assert torch.allclose(space.project(u), canonical)
        # continuous coordinates survive the round trip
        assert torch.allclose(canonical[:2], u[:2])
        assert 1e-4 <= config["optimizer.lr"] <= 1e-1
        assert 0.5 <= config["optimizer.betas.0"] <= 0.99
        assert isinstance(config["objective.dim"], int) and 2 <= config["objective.dim"] <= 8
        assert 1 <= config["optimizer.rank"] <= 64
        assert config["optimizer.name"] in ("adam", "sgd", "rmsprop")
        assert 1 <= len(config["objective.layers"]) <= 6
        assert len(config["objective.top"]) == 3 and config["objective.top"] == sorted(
            config["objective.top"]
        )
        assert len(config["objective.mask"]) == 4 and sum(config["objective.mask"]) == 2
    # batched projection keeps the shape and is idempotent
    projected = space.project(points.reshape(20, 10, space.dims))
    assert projected.shape == (20, 10, space.dims)
    assert torch.equal(space.project(projected), projected)
    # the unit-cube corners decode to the range ends
    assert space.decode(torch.zeros(space.dims))["optimizer.lr"] == pytest.approx(1e-4)
    assert space.decode(torch.ones(space.dims))["optimizer.lr"] == pytest.approx(1e-1)


def test_uniform_draws_are_uniform_over_integers_and_choices() -> None:
    space = parse_space(
        {
            "objective.dim": {"type": "int", "low": 2, "high": 5},
            "optimizer.name": {"choices": ["a", "b"]},
            "objective.top": {"type": "layers", "num_layers": 4, "k": 2},
        },
        "t",
    )
    configs = [space.decode(u) for u in space.sample(4000, torch.Generator().manual_seed(1))]
    dims = Counter(c["objective.dim"] for c in configs)
    assert sorted(dims) == [2, 3, 4, 5]
    assert all(abs(n / 4000 - 0.25) < 0.03 for n in dims.values())
    names = Counter(c["optimizer.name"] for c in configs)
    assert abs(names["a"] / 4000 - 0.5) < 0.03
    pairs = Counter(tuple(c["objective.top"]) for c in configs)
    assert len(pairs) == 6  # every 2-of-4 subset, each about 1/6
    assert all(abs(n / 4000 - 1 / 6) < 0.03 for n in pairs.values())


def test_encode_rejects_configs_outside_the_space() -> None:
    space = parse_space(MIXED, "t")
    good = space.decode(torch.full((space.dims,), 0.3, dtype=torch.float64))
    for key, bad in [
        ("optimizer.lr", 0.5),
        ("objective.dim", 9),
        ("objective.dim", "3"),
        ("optimizer.name", "adagrad"),
        ("objective.top", [0, 1]),
        ("objective.layers", []),
        ("objective.layers", [0, 6]),
        ("objective.mask", [True, True, True, False]),
    ]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            space.encode({**good, key: bad})
    with pytest.raises(ConfigError, match="lacks"):
        space.encode({"optimizer.lr": 0.01})


def test_config_key_ignores_order_and_tuple_vs_list() -> None:
    assert config_key({"a": (1, 2), "b": 0.5}) == config_key({"b": 0.5, "a": [1, 2]})
    assert config_key({"a": 1}) != config_key({"a": 2})


def test_list_element_keys_need_the_list_in_the_inner_spec() -> None:
    space = parse_space({"optimizer.betas.0": {"low": 0.5, "high": 0.99}}, "h")
    with pytest.raises(ConfigError, match=r"'optimizer\.betas\.0'.*betas = \[0\.9, 0\.999\]"):
        check_against_specs(space, {"name": "sphere"}, {"name": "adam"}, "h")
    check_against_specs(space, {"name": "sphere"}, {"name": "adam", "betas": [0.9, 0.99]}, "h")
    nested = parse_space({"optimizer.base_config.betas.1": {"low": 0.9, "high": 0.999}}, "h")
    with pytest.raises(ConfigError, match=r"base_config\.betas"):
        check_against_specs(
            nested, {"name": "sphere"}, {"name": "optex", "base_config": {"lr": 0.1}}, "h"
        )


def test_keys_must_be_config_keys_of_the_inner_plugins() -> None:
    lr = {"low": 1e-3, "high": 1.0, "log": True}
    space = parse_space({"optimizer.lrr": lr}, "h")
    with pytest.raises(ConfigError, match=r"'optimizer\.lrr': optimizer 'adam' has no .*'lrr'"):
        check_against_specs(space, {"name": "sphere"}, {"name": "adam"}, "h")
    space = parse_space({"objective.dims": {"type": "int", "low": 2, "high": 4}}, "h")
    with pytest.raises(ConfigError, match=r"objective 'sphere' has no config key 'dims'.*dim"):
        check_against_specs(space, {"name": "sphere"}, {"name": "adam"}, "h")
    # every searched optimizer must take every searched optimizer key
    space = parse_space(
        {"optimizer.name": {"choices": ["adam", "sgd"]}, "optimizer.amsgrad": {"choices": [0, 1]}},
        "h",
    )
    with pytest.raises(ConfigError, match="optimizer 'sgd' has no config key 'amsgrad'"):
        check_against_specs(space, {"name": "sphere"}, {"name": "adam"}, "h")
    space = parse_space({"optimizer.name": {"choices": ["adam", "sgd"]}, "optimizer.lr": lr}, "h")
    check_against_specs(space, {"name": "sphere"}, {"name": "adam"}, "h")


@pytest.mark.parametrize("name", ["random_search", "botorch"])
def test_registry_validates_space_on_creation(name: str) -> None:
    reg = optkit.get_registry()
    with pytest.raises(ConfigError, match=r"'optimizer\.lr': inverted range"):
        reg.create(
            "hyperoptimizer",
            {"name": name, "space": {"optimizer.lr": {"low": 1.0, "high": 0.1}}},
        )
    with pytest.raises(ConfigError, match="'trials' must be >= 1"):
        reg.create(
            "hyperoptimizer",
            {"name": name, "trials": 0, "space": {"optimizer.lr": {"low": 0.1, "high": 1.0}}},
        )
    with pytest.raises(ConfigError, match="space"):
        reg.create("hyperoptimizer", {"name": name, "space": 0.1})


def test_botorch_refuses_spaces_it_cannot_handle() -> None:
    reg = optkit.get_registry()
    lr = {"low": 1e-3, "high": 1.0, "log": True}
    with pytest.raises(ConfigError, match=r"80 unit-cube dimensions.*random_search"):
        reg.create(
            "hyperoptimizer",
            {
                "name": "botorch",
                "space": {"optimizer.lr": lr, "objective.layers": {"num_layers": 79}},
            },
        )
    many = {f"optimizer.c{i}": {"choices": list(range(5))} for i in range(3)}  # 125 combos
    with pytest.raises(ConfigError, match="125 combinations"):
        reg.create("hyperoptimizer", {"name": "botorch", "space": many, "categorical": "enumerate"})
    relaxed = reg.create("hyperoptimizer", {"name": "botorch", "space": many})
    assert not relaxed.enumerate  # 'auto' falls back to rounding the one-hot relaxation
    with pytest.raises(ConfigError, match="'initial_trials' must be in"):
        reg.create(
            "hyperoptimizer",
            {"name": "botorch", "space": {"optimizer.lr": lr}, "trials": 5, "initial_trials": 6},
        )
    # random search takes the big layer space
    reg.create(
        "hyperoptimizer",
        {"name": "random_search", "space": {"objective.layers": {"num_layers": 79}}},
    )


def test_listing_plugins_does_not_import_botorch() -> None:
    code = (
        "import sys, optkit; reg = optkit.get_registry();"
        " assert {'botorch', 'random_search'} <= set(reg.names('hyperoptimizer'));"
        " heavy = [m for m in sys.modules if m.split('.')[0] in ('botorch', 'gpytorch')];"
        " assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
