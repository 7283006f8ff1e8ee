"""Test helpers that run inside Ray workers (sent by value with cloudpickle)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import torch
from optkit_synthetic.functions import Sphere

import optkit
from optkit.executors import SerialExecutor
from optkit.oracle import Oracle


class DieOnceSphere(Sphere):
    """``sphere`` whose loss kills its own process once, while ``marker`` exists (the first
    evaluation that sees the file deletes it and exits): an actor dying mid-round."""

    name: ClassVar[str] = "sphere"

    def __init__(self, *, marker: str, dim: int = 4) -> None:
        super().__init__(dim=dim)
        self.marker = marker

    def loss(self, params: dict[str, torch.Tensor], batch: Any) -> torch.Tensor:
        path = Path(self.marker)
        if path.exists():
            path.unlink()
            os._exit(1)
        return super().loss(params, batch)


def run_cell(cell: dict[str, Any]) -> list[dict[str, Any]]:
    """A real (tiny) cell: objective x optimizer x seed with the serial executor; one row per
    iteration. ``cell["fail"]`` raises instead (for the error path)."""
    torch.set_num_threads(1)
    if cell.get("fail"):
        raise ValueError(f"cell {cell['id']} failed on purpose")
    reg = optkit.get_registry()
    obj = reg.create("objective", cell["objective"])
    obj.prepare(torch.device("cpu"), torch.float32)
    opt = reg.create("optimizer", cell["optimizer"])
    gen = torch.Generator().manual_seed(cell["seed"])
    params = obj.init_params(gen)
    state = opt.init(params)
    oracle = Oracle(obj, SerialExecutor(), gen)
    rows = []
    for it in range(1, cell["iterations"] + 1):
        params, state, _ = opt.step(params, state, oracle)
        rows.append(
            {"cell": cell["id"], "iteration": it, "pid": os.getpid(), **obj.evaluate(params)}
        )
    return rows
