"""OptEx's parallel round in your own training loop: ``optkit.OptEx.step_batched``.

Trains a small MLP on scikit-learn's bundled 8x8 digits (real data, no download) three
ways, on the same minibatch stream: plain Adam (one minibatch per step), OptEx with the
closure path (``step``: N closure calls one after the other) and OptEx with the batched path
(``step_batched``: the N gradients in one ``torch.func.vmap`` over
``torch.func.functional_call``). The two OptEx runs give the same parameters; the batched
one makes one vectorized call per iteration instead of N.

    python docs/examples/optex-batched/train_digits.py [--steps 60] [--n 4]
"""

from __future__ import annotations

import argparse
import time

import torch
from sklearn.datasets import load_digits

import optkit

Batch = tuple[torch.Tensor, torch.Tensor]


def loss_fn(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """The loss of one minibatch: what ``step_batched`` vmaps over the N batches."""
    x, y = batch
    return torch.nn.functional.cross_entropy(model(x), y)


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Tanh(), torch.nn.Linear(64, 10))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60, help="sequential iterations")
    ap.add_argument("--n", type=int, default=4, help="OptEx parallelism N")
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target)
    gen = torch.Generator().manual_seed(0)
    stream = [
        (x[idx], y[idx])
        for idx in torch.randint(0, len(y), (args.steps * args.n, args.batch), generator=gen)
    ]

    def full_loss(model: torch.nn.Module) -> float:
        with torch.no_grad():
            return float(loss_fn(model, (x, y)))

    # Plain Adam: one minibatch per sequential step.
    adam_model = make_model()
    adam = torch.optim.Adam(adam_model.parameters(), lr=1e-2)
    start = time.perf_counter()
    for batch in stream[: args.steps]:
        adam.zero_grad()
        loss_fn(adam_model, batch).backward()
        adam.step()
    adam_s = time.perf_counter() - start

    # OptEx, closure path: N closure calls per step, one after the other.
    seq_model = make_model()
    seq = optkit.OptEx(seq_model.parameters(), base=torch.optim.Adam, parallelism=args.n, lr=1e-2)
    start = time.perf_counter()
    for t in range(args.steps):
        feed = iter(stream[t * args.n : (t + 1) * args.n])

        def closure(feed=feed) -> torch.Tensor:  # type: ignore[no-untyped-def]
            seq.zero_grad()
            loss = loss_fn(seq_model, next(feed))
            loss.backward()
            return loss

        seq.step(closure)
    seq_s = time.perf_counter() - start

    # OptEx, batched path: the N gradients in one vmap over functional_call.
    bat_model = make_model()
    bat = optkit.OptEx(bat_model.parameters(), base=torch.optim.Adam, parallelism=args.n, lr=1e-2)
    start = time.perf_counter()
    for t in range(args.steps):
        bat.step_batched(bat_model, loss_fn, stream[t * args.n : (t + 1) * args.n])
    bat_s = time.perf_counter() - start

    same = torch.allclose(
        torch.nn.utils.parameters_to_vector(seq_model.parameters()),
        torch.nn.utils.parameters_to_vector(bat_model.parameters()),
        rtol=1e-4,
        atol=1e-5,
    )
    print(f"{args.steps} sequential steps, N = {args.n}, batch {args.batch}")
    print(f"  Adam                   full-data loss {full_loss(adam_model):.4f}  {adam_s:.2f} s")
    print(f"  OptEx step(closure)    full-data loss {full_loss(seq_model):.4f}  {seq_s:.2f} s")
    print(f"  OptEx step_batched     full-data loss {full_loss(bat_model):.4f}  {bat_s:.2f} s")
    print(f"  closure and batched paths give the same parameters: {same}")


if __name__ == "__main__":
    main()
