"""The ``target`` and ``data_parallel`` baselines: counts and behaviour."""

from __future__ import annotations

import pytest
import torch

from optkit.errors import ConfigError, PluginError
from optkit.oracle import Oracle
from optkit.registry import get_registry

REG = get_registry()


def drive(spec: dict, iters: int, noise: float = 0.0, d: int = 50):  # type: ignore[no-untyped-def, type-arg]
    obj = REG.create("objective", {"name": "rosenbrock", "dim": d, "noise": noise})
    obj.prepare(torch.device("cpu"), torch.float32)
    opt = REG.create("optimizer", spec)
    gen = torch.Generator().manual_seed(0)
    params = obj.init_params(gen)
    state = opt.init(params)
    oracle = Oracle(obj, REG.create("executor", {"name": "vmap"}), gen)
    for _ in range(iters):
        params, state, _ = opt.step(params, state, oracle)
    return params, oracle


def wrapped(name: str, n: int) -> dict:  # type: ignore[type-arg]
    return {"name": name, "base": "adam", "base_config": {"lr": 0.02}, "parallelism": n}


def test_target_is_n_true_steps_per_counted_round() -> None:
    p_target, oracle = drive(wrapped("target", 4), iters=5)
    p_vanilla, vanilla = drive({"name": "adam", "lr": 0.02}, iters=20)
    torch.testing.assert_close(p_target["x"], p_vanilla["x"])
    assert (oracle.sequential_steps, oracle.grad_evals) == (5, 20)
    assert (vanilla.sequential_steps, vanilla.grad_evals) == (20, 20)


def test_data_parallel_counts_and_equals_vanilla_on_exact_gradients() -> None:
    p_dp, oracle = drive(wrapped("data_parallel", 4), iters=5)
    p_vanilla, _ = drive({"name": "adam", "lr": 0.02}, iters=5)
    torch.testing.assert_close(p_dp["x"], p_vanilla["x"])
    assert (oracle.sequential_steps, oracle.grad_evals) == (5, 20)


def test_data_parallel_averages_n_independent_minibatches() -> None:
    """With gradient noise the step uses the mean of N draws: its noise shrinks ~ 1/sqrt(N)."""
    obj = REG.create("objective", {"name": "sphere", "dim": 4000, "noise": 1.0})
    obj.prepare(torch.device("cpu"), torch.float32)
    dp = REG.create(
        "optimizer",
        {"name": "data_parallel", "base": "sgd", "base_config": {"lr": 1.0}, "parallelism": 16},
    )
    x0 = {"x": torch.zeros(4000)}  # true gradient 0: the step is minus the averaged noise
    oracle = Oracle(obj, REG.create("executor", {"name": "vmap"}), torch.Generator().manual_seed(1))
    new, _, _ = dp.step(x0, dp.init(x0), oracle)
    assert float(new["x"].std()) == pytest.approx(1.0 / 4.0, rel=0.05)


@pytest.mark.parametrize("name", ["target", "data_parallel"])
def test_config_errors(name: str) -> None:
    with pytest.raises(ConfigError, match=r"parallelism must be >= 1"):
        REG.create("optimizer", {**wrapped(name, 0)})
    with pytest.raises(PluginError, match=r"unknown base optimizer 'nope'"):
        REG.create("optimizer", {**wrapped(name, 2), "base": "nope"})
    with pytest.raises(ConfigError, match=r"not a first-order optimizer"):
        REG.create("optimizer", {**wrapped(name, 2), "base": "optex"})


# ------------------------------------------------------------ the torch.optim wrappers
def mlp_objective():  # type: ignore[no-untyped-def]
    """A real minibatch objective with several parameter tensors (Rosenbrock has one)."""
    from optkit.interfaces import Objective

    class TinyMLP(Objective):
        name = "test_tiny_mlp"
        summary = "tests only"

        def prepare(self, device: torch.device, dtype: torch.dtype) -> None:
            super().prepare(device, dtype)
            g = torch.Generator().manual_seed(5)
            self.x = torch.randn(64, 6, generator=g)
            self.y = torch.randint(0, 3, (64,), generator=g)

        def init_params(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
            return {
                "w1": torch.randn(6, 8, generator=generator) / 3,
                "b1": torch.zeros(8),
                "w2": torch.randn(8, 3, generator=generator) / 3,
            }

        def sample_batch(self, generator: torch.Generator, params: object) -> torch.Tensor:
            return torch.randint(0, 64, (16,), generator=generator)

        def loss(self, params: dict[str, torch.Tensor], batch: torch.Tensor) -> torch.Tensor:
            h = torch.tanh(self.x[batch] @ params["w1"] + params["b1"])
            return torch.nn.functional.cross_entropy(h @ params["w2"], self.y[batch])

        def evaluate(self, params: dict[str, torch.Tensor]) -> dict[str, float]:
            return {"loss": float(self.loss(params, torch.arange(64)))}

    obj = TinyMLP()
    obj.prepare(torch.device("cpu"), torch.float32)
    return obj


@pytest.mark.parametrize("name", ["adam", "sgd", "rmsprop", "adagrad"])
@pytest.mark.parametrize("objective", ["rosenbrock", "mlp"])
def test_torch_optimizer_equals_a_plain_torch_optim_loop(name: str, objective: str) -> None:
    """The registered rule gives bit for bit the iterates and losses of the plain loop
    ``zero_grad(); loss = f(x); loss.backward(); opt.step()`` from the same start and batches."""
    config = {"lr": 0.01} if name != "sgd" else {"lr": 1e-4, "momentum": 0.9}
    if objective == "mlp":
        obj = mlp_objective()
    else:
        spec = {"name": "rosenbrock", "dim": 30, "noise": 0.5, "init_low": -1, "init_high": 1}
        obj = REG.create("objective", spec)
        obj.prepare(torch.device("cpu"), torch.float32)
    opt = REG.create("optimizer", {"name": name, **config})
    gen = torch.Generator().manual_seed(3)
    params = obj.init_params(gen)
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    plain = type(opt).torch_class(list(leaves.values()), **config)
    plain_gen = torch.Generator().manual_seed(3)
    obj.init_params(plain_gen)  # the same generator state as the oracle's
    state = opt.init(params)
    oracle = Oracle(obj, REG.create("executor", {"name": "vmap"}), gen)
    for _ in range(15):
        params, state, info = opt.step(params, state, oracle)
        plain.zero_grad()
        loss = obj.loss(leaves, obj.sample_batch(plain_gen, leaves))
        loss.backward()
        plain.step()
        assert info.loss == float(loss.detach())
        for key, value in params.items():
            assert torch.equal(value, leaves[key].detach()), key


def test_update_on_its_own_output_equals_update_on_a_copy() -> None:
    """Passing back the tensors an update returned (the slots are not reloaded) and passing
    equal copies of them (the slots are reloaded) give identical results; in both cases the
    inputs are left untouched."""
    opt = REG.create("optimizer", {"name": "adam", "lr": 0.1})
    start = {"a": torch.linspace(-1, 1, 7), "b": torch.ones(2, 3)}
    gen = torch.Generator().manual_seed(0)
    grads = [{k: torch.randn(v.shape, generator=gen) for k, v in start.items()} for _ in range(6)]
    own_state, copy_state = opt.init(start), opt.init(start)
    own, copied = start, start
    for g in grads:
        previous, before = own, {k: v.clone() for k, v in own.items()}
        own, own_state = opt.update(previous, g, own_state)
        copied, copy_state = opt.update({k: v.clone() for k, v in copied.items()}, g, copy_state)
        for key in own:
            assert torch.equal(own[key], copied[key])
            assert torch.equal(previous[key], before[key]), "update mutated its input"
        assert own_state.holds(own) and not own_state.holds(before)


def test_update_reloads_params_modified_in_place() -> None:
    """A returned tensor changed in place (directly or through a view) is not the state's any
    more: the next update starts from its new values, as from any other params."""
    opt = REG.create("optimizer", {"name": "sgd", "lr": 0.5})
    g = {"x": torch.ones(4)}
    out, state = opt.update({"x": torch.zeros(4)}, g, opt.init({"x": torch.zeros(4)}))
    assert state.holds(out)
    out["x"][1:3].fill_(10.0)  # through a view: the version counter is shared
    assert not state.holds(out)
    new, _ = opt.update(out, g, state)
    torch.testing.assert_close(new["x"], torch.tensor([-1.0, 9.5, 9.5, -1.0]))


def test_update_steps_in_place_when_it_holds_the_params() -> None:
    """The slots are written once less per update (no load) when the params are the state's
    own last output: counted by the slots' version counters."""
    opt = REG.create("optimizer", {"name": "sgd", "lr": 0.1})
    x = {"x": torch.ones(5)}
    g = {"x": torch.ones(5)}
    state = opt.init(x)
    slot = state.slots["x"]
    v0 = slot._version
    out, state = opt.update(x, g, state)  # not held: loaded, then stepped
    loaded = slot._version - v0
    v1 = slot._version
    opt.update(out, g, state)  # held: stepped only
    assert slot._version - v1 == loaded - 1


def test_torch_kwargs_ignore_attributes_that_are_not_config() -> None:
    """An instance attribute that is not an ``__init__`` keyword (the registry records
    ``optkit_spec`` on each instance) is not passed to ``torch.optim``."""
    opt = REG.create("optimizer", {"name": "adamw", "lr": 0.05})
    opt.optkit_spec = {"name": "adamw", "lr": 0.05}  # type: ignore[attr-defined]
    assert opt.torch_kwargs() == {
        "lr": 0.05,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "weight_decay": 0.01,
        "amsgrad": False,
    }
    state = opt.init({"x": torch.ones(3)})
    assert state.optimizer.defaults["lr"] == 0.05


@pytest.mark.gpu  # deselected without CUDA (tests/conftest.py); runs with `pytest -m gpu`
def test_copy_out_on_cuda_is_exact_and_fresh_in_one_launch() -> None:
    """Several CUDA slots are copied by one multi-tensor launch: bit for bit (-0.0, inf and
    NaN included), into fresh storage; and an update on CUDA keeps its input untouched."""
    from optkit_baselines.torch_optim import copy_out

    special = torch.tensor([-0.0, 0.0, float("inf"), -float("inf"), float("nan"), 1e-45, 3.0])
    special[4:5].view(torch.int32).fill_(0x7FC00001)  # a NaN with a payload: kept bit for bit
    slots = [special.cuda(), torch.randn(4, 3, device="cuda"), torch.ones(2, device="cuda")]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        copies = copy_out(slots)
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    assert len(kernels) == 1, [e.name for e in kernels]
    for src, dst in zip(slots, copies, strict=True):
        assert dst.data_ptr() != src.data_ptr()
        assert torch.equal(src.view(torch.int32), dst.view(torch.int32))  # bits, NaN included
    opt = REG.create("optimizer", {"name": "adam", "lr": 0.1})
    start = {"a": torch.linspace(-1, 1, 7, device="cuda"), "b": torch.ones(2, 3, device="cuda")}
    before = {k: v.clone() for k, v in start.items()}
    out, state = opt.update(
        start, {k: torch.ones_like(v) for k, v in start.items()}, opt.init(start)
    )
    assert state.holds(out) and all(torch.equal(start[k], before[k]) for k in start)
    assert all(not torch.equal(out[k], start[k]) for k in start)
