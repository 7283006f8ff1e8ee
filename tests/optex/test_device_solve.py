"""The device-side solve (``device_solve=True``, run eagerly on the CPU here) against the
host solve, its branchless fallback, and the append path's CUDA-graph fallback."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch
from optkit_optex.config import EstimatorConfig
from optkit_optex.estimator import KernelGradientEstimator

from .test_fused import trajectory


@pytest.mark.parametrize(
    "base",
    [("adam", {"lr": 0.05}, "rosenbrock"), ("sgd", {"lr": 0.05, "momentum": 0.9}, "sphere")],
    ids=["adam", "sgd-momentum"],
)
@pytest.mark.parametrize("proxy_updates_state", [True, False])
@pytest.mark.parametrize("next_iterate", ["last", "best"])
@pytest.mark.parametrize("fused", [True, False])
def test_device_solve_gives_the_host_solve_iterates(
    base: tuple[str, dict[str, Any], str], proxy_updates_state: bool, next_iterate: str, fused: bool
) -> None:
    spec = {
        "name": "optex",
        "base": base[0],
        "base_config": base[1],
        "parallelism": 4,
        "history": 10,
        "proxy_updates_state": proxy_updates_state,
        "next_iterate": next_iterate,
        "fused": fused,
    }
    host = trajectory({**spec, "device_solve": False}, fn=base[2])
    device = trajectory({**spec, "device_solve": True}, fn=base[2])
    for a, b in zip(host, device, strict=True):
        torch.testing.assert_close(a["x"], b["x"], rtol=1e-6, atol=1e-6)
    assert not torch.equal(device[-1]["x"], device[0]["x"])


def _history(
    device_solve: bool,
    *,
    steps: int = 14,
    fit: str = "heuristic",
    fit_lag: int = 1,
    duplicate: bool = False,
) -> list[tuple[str, torch.Tensor, float, int]]:
    """(mode, query, jitter, fallbacks) per iteration; T0 = 20 with N = 4 wraps the ring."""
    d, n = 40, 4
    est = KernelGradientEstimator(
        d,
        EstimatorConfig(
            history=20,
            fit=fit,
            lengthscale=0.5 if fit == "fixed" else None,
            noise=0.0 if fit == "fixed" else None,
            fit_lag=fit_lag,
        ),
        device_solve=device_solve,
        dtype=torch.float64,
    )
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(d, generator=gen, dtype=torch.float64)
    out = []
    for it in range(steps):
        est.begin(x)
        pts = x + 0.05 * torch.randn(n, d, generator=gen, dtype=torch.float64).cumsum(0)
        if duplicate:
            pts[1] = pts[0]  # coincident points: noise 0 needs the jitter ladder
        mu = est.query(pts[1]) if est.mode == "gp" else torch.zeros(d, dtype=torch.float64)
        out.append((est.mode, mu, est.jitter, est.fallbacks))
        est.append(pts, 2 * pts + torch.sin(3 * pts), it, queried=est.queried_distances())
        x = pts[-1]
    return out


@pytest.mark.parametrize(
    ("fit", "fit_lag", "duplicate"),
    [("heuristic", 0, False), ("heuristic", 1, False), ("fixed", 1, True)],
)
def test_device_solve_matches_the_host_solve_per_query(
    fit: str, fit_lag: int, duplicate: bool
) -> None:
    host = _history(False, fit=fit, fit_lag=fit_lag, duplicate=duplicate)
    device = _history(True, fit=fit, fit_lag=fit_lag, duplicate=duplicate)
    assert [h[0] for h in host] == [d[0] for d in device]
    assert sum(h[0] == "gp" for h in host) >= 10
    for h, d in zip(host, device, strict=True):
        torch.testing.assert_close(d[1], h[1], rtol=1e-6, atol=1e-6 * float(h[1].abs().max()))
    # the device solve's jitter is read back one iteration late, with the next snapshot
    assert [d[2] for d in device[1:]] == [h[2] for h in host[:-1]]
    if duplicate:
        assert any(h[2] > 0 for h in host)
    assert all(d[3] == 0 for d in device)


@pytest.mark.parametrize("device_solve", [False, True])
def test_a_failed_solve_falls_back_to_the_newest_gradient(device_solve: bool) -> None:
    d, n = 30, 3
    est = KernelGradientEstimator(
        d,
        EstimatorConfig(history=9, fit="fixed", lengthscale=0.5),
        device_solve=device_solve,
        dtype=torch.float64,
    )
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(d, generator=gen, dtype=torch.float64)
    for it in range(3):
        est.begin(x)
        pts = x + 0.05 * torch.randn(n, d, generator=gen, dtype=torch.float64).cumsum(0)
        est.append(pts, 2 * pts + torch.sin(3 * pts), it)
        x = pts[-1]
    est.begin(x)
    assert est.mode == "gp" and est.fallbacks == 0
    pts = torch.stack([x + 0.01, x + 0.02, x + 0.03])
    pts[1, 0] = float("nan")  # a NaN point: NaN distances, every Cholesky rung fails
    est.append(pts, 2 * pts.nan_to_num(), 3, check_finite=False)
    est.begin(x + 0.03)
    newest = est.G[(est.count - 1) % est.history].clone()
    assert torch.equal(est.query(x + 0.04), newest)
    if device_solve:  # branchless: still "gp", counted with the next snapshot
        assert est.mode == "gp" and not bool(est._ok) and est.fallbacks == 0
        est.append(pts.nan_to_num(), pts.nan_to_num(), 4, check_finite=False)
        est.begin(x)
    assert est.fallbacks == 1


def test_append_graph_capture_failure_falls_back_to_eager_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Forced on the CPU, where ``torch.cuda.CUDAGraph`` cannot be built: the first append
    of a shape runs eagerly, the capture on the second fails with one warning, and every
    append gives the eager result."""
    runs = []
    for graphs in (False, True):
        est = KernelGradientEstimator(
            25, EstimatorConfig(history=8, fit="fixed", lengthscale=1.0), device_solve=True
        )
        est.graph_append = graphs
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(25, generator=gen)
        with caplog.at_level(logging.WARNING, logger="optkit_optex"):
            for it in range(6):
                est.begin(x)
                pts = x + 0.1 * torch.randn(3, 25, generator=gen).cumsum(0)
                est.append(pts, torch.cos(pts), it)
                x = pts[-1]
        runs.append((est.sqd.clone(), est.X.clone(), est.G.clone(), est.W.clone()))
        assert est.append_graph_failed == graphs
    assert sum("capture of append failed" in r.message for r in caplog.records) == 1
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


def test_auto_keeps_the_host_solve_on_the_cpu() -> None:
    from optkit.registry import get_registry

    opt = get_registry().create("optimizer", {"name": "optex", "parallelism": 3})
    state = opt.init({"x": torch.zeros(5)})
    assert opt.device_solve == "auto" and not state.estimator.device_solve
