"""The plugin-author guide's example package installs with pip and works end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "optkit-example-plugin"


@pytest.fixture(scope="module")
def installed() -> None:
    pip = [sys.executable, "-m", "pip"]
    done = subprocess.run(
        [*pip, "install", "--no-deps", "--no-build-isolation", "-q", str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    yield
    subprocess.run([*pip, "uninstall", "-y", "-q", "optkit-example-plugin"], timeout=120)


def test_example_plugin_is_listed_and_runs(installed: None, tmp_path: Path) -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "optkit.cli", "plugins", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    payload = json.loads(listed.stdout)
    mine = {p["name"]: p for p in payload["plugins"] if p["plugin"] == "example"}
    assert set(mine) == {"zakharov", "sign_sgd"}
    assert mine["zakharov"]["distribution"] == "optkit-example-plugin"
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "optkit.cli", "run", str(EXAMPLE / "task.toml"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "| zakharov | sign_sgd | 2 | 0 | gap |" in done.stdout
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    sign = [r for r in rows if r["label"] == "sign_sgd" and r["event"] == "eval"]
    assert sign[-1]["loss"] < sign[0]["loss"]


def test_example_classes_pass_the_contract_kits() -> None:
    sys.path.insert(0, str(EXAMPLE / "src"))
    try:
        from optkit_example.sign_sgd import SignSGD
        from optkit_example.zakharov import Zakharov

        from optkit.testing import check_objective, check_optimizer

        check_objective(Zakharov(dim=4))
        check_optimizer(SignSGD(lr=0.05))
    finally:
        sys.path.remove(str(EXAMPLE / "src"))
