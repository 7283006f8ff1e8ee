"""``optkit.OptEx.step_batched``: the N gradients of a round in one ``torch.func.vmap`` over
``torch.func.functional_call``, numerically the sequential closure path; and the drop-in's
issue-19 options (batches per point, early stop, estimator options)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

import optkit
from optkit.errors import ConfigError

Batch = tuple[torch.Tensor, torch.Tensor]


def digits() -> Batch:
    """scikit-learn's bundled 8x8 digits (1,797 real images, no download)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    return x, torch.tensor(data.target)


def minibatches(count: int, size: int = 64, seed: int = 0) -> list[Batch]:
    x, y = digits()
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        idx = torch.randint(0, x.shape[0], (size,), generator=gen)
        out.append((x[idx], y[idx]))
    return out


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10))


def loss_fn(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    x, y = batch
    return torch.nn.functional.cross_entropy(model(x), y)


def train(
    batched: bool, steps: int, n: int = 4, **options: Any
) -> tuple[torch.nn.Module, list[torch.Tensor], optkit.OptEx]:
    """``steps`` OptEx iterations on fresh minibatches, the round either as N closure calls
    (batch i to the i-th call) or as one ``step_batched``; returns the model, the losses
    each step returned, and the optimizer."""
    model = mlp()
    opt = optkit.OptEx(model.parameters(), base=torch.optim.Adam, parallelism=n, lr=0.01, **options)
    per_round = n * opt.batches_per_point
    data = minibatches(steps * per_round)
    out = []
    for t in range(steps):
        batches = data[t * per_round : (t + 1) * per_round]
        if batched:
            out.append(opt.step_batched(model, loss_fn, batches))
            continue
        feed = iter(batches)

        def closure(feed: Any = feed) -> torch.Tensor:
            opt.zero_grad()
            loss = loss_fn(model, next(feed))
            loss.backward()
            return loss

        out.append(opt.step(closure).detach())
    return model, out, opt


def flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.nn.utils.parameters_to_vector(model.parameters()).detach()


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"next_iterate": "best"},
        {"batches_per_point": 2},
        {"stop_variance": 0.5, "batches_per_point": 2},
        {"noise_estimate": "spread"},
    ],
    ids=["defaults", "best", "k2", "stop-k2", "spread"],
)
def test_step_batched_matches_the_sequential_closure_path(options: dict[str, Any]) -> None:
    m_seq, l_seq, o_seq = train(False, steps=6, **options)
    m_bat, l_bat, o_bat = train(True, steps=6, **options)
    torch.testing.assert_close(flat(m_bat), flat(m_seq), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.stack(l_bat), torch.stack(l_seq), rtol=1e-5, atol=1e-6)
    assert o_bat.last_losses == pytest.approx(o_seq.last_losses, rel=1e-5)


def test_step_batched_trains_the_mlp() -> None:
    model, losses, _ = train(True, steps=15)
    x, y = digits()
    with torch.no_grad():
        final = float(loss_fn(model, (x, y)))
    assert final < 0.6 * float(losses[0])


def test_stop_variance_in_the_drop_in_shortens_the_trajectory() -> None:
    _, _, opt = train(False, steps=8, stop_variance=1e-12)
    assert len(opt.last_losses) == 1  # one point reached; its 4 evaluations averaged


def test_step_batched_bad_input_is_a_clear_error() -> None:
    model = mlp()
    opt = optkit.OptEx(model.parameters(), parallelism=3, batches_per_point=2, lr=0.01)
    with pytest.raises(ConfigError, match=r"3 x 2 = 6 batches .* got 4"):
        opt.step_batched(model, loss_fn, minibatches(4))
    other = mlp()
    with pytest.raises(ConfigError, match=r"parameter #0 .* is not a parameter of the model"):
        opt.step_batched(other, loss_fn, minibatches(6))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batches_per_point": 0}, r"optkit.OptEx: batches_per_point must be an integer >= 1"),
        ({"stop_variance": -0.1}, r"optkit.OptEx: stop_variance must be a number in \(0, 1\]"),
        ({"effective_dim": 4}, r"optkit.OptEx: effective_dim = 4 is larger .* \(3\)"),
        ({"fit": "loo"}, "fit must be one of"),
    ],
)
def test_new_drop_in_options_are_checked_at_construction(
    kwargs: dict[str, Any], message: str
) -> None:
    p = [torch.nn.Parameter(torch.zeros(3))]
    make: Callable[[], object] = lambda: optkit.OptEx(p, **kwargs)  # noqa: E731
    with pytest.raises(ConfigError, match=message):
        make()
