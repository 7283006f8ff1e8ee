"""The drop-in benchmark (``benchmarks/optex_dropin.py``, run by hand on a GPU machine) at
its CPU smoke size: every variant runs and the JSON holds the times and ratios."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "optex_dropin.py"


@pytest.mark.optex
def test_optex_dropin_small(tmp_path: Path) -> None:
    script = runpy.run_path(str(SCRIPT), run_name="optex_dropin")
    out = tmp_path / "dropin.json"
    script["main"](["--small", "--n", "2", "--out", str(out)])
    result = json.loads(out.read_text())
    (row,) = result["workloads"].values()
    it = row["N=2"]
    for label in ("plain_adam", "optex_closure", "optex_batched"):
        assert it[f"{label}_ms"] > 0
        assert it[f"{label}_over_plain"] == pytest.approx(it[f"{label}_ms"] / it["plain_adam_ms"])
    assert row["parameters"] == 16 * 32 + 32 + 32 * 32 + 32 + 32 * 10 + 10
