"""The ``torch.optim`` drop-in ``optkit.OptEx`` in a user's own training loop, side by side in
one run: milliseconds per iteration of a plain ``torch.optim.Adam`` loop, of OptEx's closure
path (``step(closure)``: N closure calls one after the other) and of its batched path
(``step_batched(model, loss_fn, batches)``: the N gradients in one ``torch.func.vmap`` over
``torch.func.functional_call``); writes one JSON.

    python3 benchmarks/optex_dropin.py --out optex-dropin.json          # CUDA when present
    python3 benchmarks/optex_dropin.py --small --out smoke.json         # CPU size, seconds

Workload: a 3-layer tanh MLP (``inputs -> width -> width -> 10``) on a fixed random
teacher-labelled data set held on the device, cross-entropy on minibatches of ``batch``
rows drawn with a seeded generator (the draws are the same for every variant). Per variant,
the iterations run in interleaved blocks (block after block, every variant in turn, so slow
drifts of the machine hit all alike), the device synchronised only around a block, and the
median over blocks of the mean time per iteration is reported, with its ratio to the plain
loop. Public APIs only (``optkit.OptEx``, ``torch``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import torch

import optkit

Batch = tuple[torch.Tensor, torch.Tensor]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loss_fn(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """One minibatch's cross-entropy: what ``step_batched`` vmaps over the N batches."""
    x, y = batch
    return torch.nn.functional.cross_entropy(model(x), y)


class Workload:
    """A teacher-labelled random data set on ``device`` and a seeded minibatch stream.

    ``x``: ``(n, inputs)``; ``y``: ``(n,)`` labels in ``[0, 10)``."""

    def __init__(
        self, device: torch.device, *, inputs: int, width: int, n: int, batch: int
    ) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, inputs, generator=gen).to(device)
        teacher = torch.randn(inputs, 10, generator=gen).to(device)
        self.y = (self.x @ teacher).argmax(1)
        self.inputs, self.width, self.batch, self.device = inputs, width, batch, device
        self.gen = torch.Generator(device=device).manual_seed(1)

    def model(self) -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Linear(self.inputs, self.width),
            torch.nn.Tanh(),
            torch.nn.Linear(self.width, self.width),
            torch.nn.Tanh(),
            torch.nn.Linear(self.width, 10),
        ).to(self.device)

    def minibatch(self) -> Batch:
        idx = torch.randint(0, len(self.y), (self.batch,), generator=self.gen, device=self.device)
        return self.x[idx], self.y[idx]


class Variant:
    """One way of training; ``block(k)`` runs k sequential iterations."""

    def __init__(self, work: Workload, lr: float, n: int) -> None:
        self.work, self.n = work, n
        self.model = work.model()
        self.setup(lr)

    def setup(self, lr: float) -> None:
        raise NotImplementedError

    def block(self, k: int) -> None:
        raise NotImplementedError


class PlainAdam(Variant):
    """``zero_grad(); loss_fn(model, batch).backward(); step()`` with ``torch.optim.Adam``."""

    def setup(self, lr: float) -> None:
        self.opt = torch.optim.Adam(self.model.parameters(), lr=lr)

    def block(self, k: int) -> None:
        for _ in range(k):
            self.opt.zero_grad()
            loss_fn(self.model, self.work.minibatch()).backward()
            self.opt.step()


class OptExClosure(Variant):
    """``optkit.OptEx(...).step(closure)``: N closure calls per iteration, one by one."""

    def setup(self, lr: float) -> None:
        self.opt = optkit.OptEx(
            self.model.parameters(), base=torch.optim.Adam, parallelism=self.n, lr=lr
        )

    def closure(self) -> torch.Tensor:
        self.opt.zero_grad()
        loss = loss_fn(self.model, self.work.minibatch())
        loss.backward()
        return loss

    def block(self, k: int) -> None:
        for _ in range(k):
            self.opt.step(self.closure)


class OptExBatched(OptExClosure):
    """``optkit.OptEx(...).step_batched(model, loss_fn, batches)``: one vmapped round."""

    def block(self, k: int) -> None:
        for _ in range(k):
            batches = [self.work.minibatch() for _ in range(self.n)]
            self.opt.step_batched(self.model, loss_fn, batches)


VARIANTS: dict[str, type[Variant]] = {
    "plain_adam": PlainAdam,
    "optex_closure": OptExClosure,
    "optex_batched": OptExBatched,
}


def iteration_ms(work: Workload, lr: float, n: int, rounds: int, block: int) -> dict[str, float]:
    """Milliseconds per iteration of every variant (median over interleaved blocks), their
    fastest block, and the ratios to the plain loop."""
    variants = {label: cls(work, lr, n) for label, cls in VARIANTS.items()}
    for v in variants.values():  # warm up: allocations, vmap's first trace, the history fill
        v.block(max(block, 2 * n))
    times: dict[str, list[float]] = {label: [] for label in variants}
    order = list(variants.items())
    for r in range(rounds):
        for label, v in order if r % 2 == 0 else order[::-1]:
            sync(work.device)
            start = time.perf_counter()
            v.block(block)
            sync(work.device)
            times[label].append((time.perf_counter() - start) / block)
    out = {f"{label}_ms": 1e3 * statistics.median(ts) for label, ts in times.items()}
    out.update({f"{label}_min_ms": 1e3 * min(ts) for label, ts in times.items()})
    for label in variants:
        out[f"{label}_over_plain"] = out[f"{label}_ms"] / out["plain_adam_ms"]
    out["batched_over_closure"] = out["optex_batched_ms"] / out["optex_closure_ms"]
    return out


def bench(device: torch.device, small: bool, ns: Sequence[int]) -> dict[str, Any]:
    sizes: dict[str, dict[str, int]] = (
        {"mlp-tiny": {"inputs": 16, "width": 32, "n": 512, "batch": 16}}
        if small
        else {
            "mlp-1.3M": {"inputs": 256, "width": 1024, "n": 65536, "batch": 128},
            "mlp-1.3M-batch1024": {"inputs": 256, "width": 1024, "n": 65536, "batch": 1024},
        }
    )
    rounds, block = (2, 2) if small else (10, 20)
    result: dict[str, Any] = {}
    for name, size in sizes.items():
        work = Workload(device, **size)
        params = sum(p.numel() for p in work.model().parameters())
        result[name] = {"parameters": params, **size}
        for n in ns:
            result[name][f"N={n}"] = iteration_ms(work, 1e-3, n, rounds, block)
    return result


def summary(result: dict[str, Any]) -> str:
    lines = []
    for name, row in result["workloads"].items():
        for key, it in row.items():
            if key.startswith("N="):
                lines.append(
                    f"{name} {key}: plain Adam {it['plain_adam_ms']:.3f} ms, OptEx closure"
                    f" {it['optex_closure_ms']:.3f} ms ({it['optex_closure_over_plain']:.2f}x),"
                    f" batched {it['optex_batched_ms']:.3f} ms"
                    f" ({it['optex_batched_over_plain']:.2f}x)"
                )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--out", default="optex-dropin.json")
    ap.add_argument("--small", action="store_true", help="CPU-sized smoke run (seconds)")
    ap.add_argument("--n", type=int, nargs="+", default=[4, 8], help="OptEx parallelism N")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.small else "cpu")
    torch.set_num_threads(1)
    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "workloads": bench(device, args.small, args.n),
    }
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)
    print(summary(result))


if __name__ == "__main__":
    main()
