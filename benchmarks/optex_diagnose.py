"""Why OptEx does not help on a stochastic network: a CPU diagnosis of its gradient estimate.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/optex_diagnose.py --sections package  # 1 min
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/optex_diagnose.py --sections cos      # 3 min
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/optex_diagnose.py --sections widths   # 2 min
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/optex_diagnose.py --sections variants \
        --ls-median 11.1 --seeds 0 [--only "optex (defaults),target"]  # ~40 s per OptEx row

Workload: the benchmark MLP of ``benchmarks/optex_gpu.py`` (:class:`MLPObjective`, tanh,
teacher-labelled random data, minibatch 128) at the H200 run's size (width 1024, inputs 256,
n 8192: d = 1,323,018; ``--width`` etc. to change it), Adam lr 1e-3, N = 8, T0 = 50, goal =
vanilla's full-data loss after 40 iterations.

Sections:

* ``package``: vanilla / optex / target / data_parallel through the package (the
  ``optex_gpu.Runner``), iterations to the goal: the H200 result, on the CPU.
* ``cos``: OptEx as an instrumented copy of the fused loop (``proxy_updates_state = true``,
  ``next_iterate = "last"``) with the package's real :class:`KernelGradientEstimator` and a
  flat Adam (torch's rule written out, so states can be copied). At every proxy step
  s = 1 .. N-1 the estimate ``mu`` that the step uses, queried at ``q = theta_{s-1}`` (s Adam
  steps past the newest stored point), is compared with the minibatch gradient ``g_mb`` the
  round then evaluates at ``q`` and with ``g_full`` (the gradient on a fixed 2048-sample
  subset, ``--full-batch``); so are the naive predictors ``last`` (newest stored gradient),
  ``meanN`` (mean of the last round's N gradients), ``last_full`` (the full gradient at the
  newest stored point: how far the true gradient turns in s steps), ``mu_exact`` (a shadow
  estimator with the same points but full gradients: the GP without minibatch noise) and
  ``mb2`` (an independent second minibatch gradient at ``q``: the noise ceiling). Also the
  posterior variance, ``1^T W k`` and the fitted hyperparameters.
* ``widths``: OptEx / target / data_parallel at widths 128 .. 1024.
* ``variants``: iterations to the goal for OptEx options (noise, lengthscale, T0, N,
  next_iterate), predictors swapped into the proxy steps (last, meanN, zero) and the fixes:

  - ``prior_mean`` (fix a): GP posterior with a constant prior mean ``m`` (the newest round's
    mean) instead of zero: ``mu = m + k^T W (G - m) = G^T w + (1 - 1^T w) m``, ``w = W k``;
    it reverts to ``m`` where the posterior variance is large;
  - ``forward`` (fix b): (lengthscale, noise) chosen by predicting the newest round from the
    older pairs (forward validation, as the estimate is used), not by leave-one-out;
  - ``loo_wide``: the package's LOO heuristic with the noise grid extended by 3, 10, 30, 100
    (the package's default grid since this diagnosis; every row sets its grid explicitly).

Results and conclusions: ``docs/benchmarks/optex-workloads.md``, section "Why OptEx does not
help on stochastic networks (CPU diagnosis, session 2)".
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optkit_optex.hyper as hyper_module
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from optex_gpu import MLPObjective, Runner, specs
from optkit_optex.estimator import KernelGradientEstimator
from optkit_optex.hyper import SCALE_GRID, Hyper
from optkit_optex.kernels import evaluate_sq, kernel_spec
from optkit_optex.solve import host_inverse

OLD_NOISE_GRID: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
"""The LOO noise grid when this diagnosis ran (session 2): its top, 1.0, was always chosen."""
WIDE_NOISE_GRID: tuple[float, ...] = (*OLD_NOISE_GRID, 3.0, 10.0, 30.0, 100.0)
"""The grid extended upward (``loo_wide``); ``optkit_optex.hyper.NOISE_GRID`` since."""


# ------------------------------------------------------------------------------ problem
class Problem:
    """The MLP as a function of one flat ``(d,)`` parameter vector."""

    def __init__(self, width: int, inputs: int, n: int, full_batch: int) -> None:
        self.obj = MLPObjective(width=width, inputs=inputs, n=n)
        self.obj.prepare(torch.device("cpu"), torch.float32)
        self.full = torch.arange(n)  # the loss: all n samples
        self.gfull = torch.arange(min(n, full_batch))  # the "full-batch" gradient's samples

    def init(self, seed: int) -> torch.Tensor:
        params = self.obj.init_params(torch.Generator().manual_seed(seed))
        self.shapes = [(k, v.shape) for k, v in params.items()]
        return torch.cat([v.reshape(-1) for v in params.values()])

    def unflat(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        out, i = {}, 0
        for k, shape in self.shapes:
            size = math.prod(shape)
            out[k] = theta[i : i + size].view(shape)
            i += size
        return out

    def grad(self, theta: torch.Tensor, idx: torch.Tensor) -> tuple[float, torch.Tensor]:
        """(loss, gradient ``(d,)``) on the samples ``idx``."""
        with torch.enable_grad():
            x = theta.detach().requires_grad_(True)
            loss = self.obj.loss(self.unflat(x), idx)
            (g,) = torch.autograd.grad(loss, x)
        return float(loss.detach()), g

    @torch.no_grad()
    def full_loss(self, theta: torch.Tensor) -> float:
        return float(self.obj.loss(self.unflat(theta), self.full))

    def batch(self, gen: torch.Generator) -> torch.Tensor:
        return torch.randint(0, self.obj.n, (128,), generator=gen)


@dataclass
class Adam:
    """torch.optim.Adam's rule on a flat tensor (state copyable)."""

    lr: float
    m: torch.Tensor
    v: torch.Tensor
    t: int = 0

    def step(self, theta: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        b1, b2, eps = 0.9, 0.999, 1e-8
        self.t += 1
        self.m = b1 * self.m + (1 - b1) * g
        self.v = b2 * self.v + (1 - b2) * g * g
        denom = (self.v.sqrt() / math.sqrt(1 - b2**self.t)) + eps
        return theta - (self.lr / (1 - b1**self.t)) * self.m / denom

    def copy(self) -> Adam:
        return replace(self)


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


# ------------------------------------------------------------------------------ fixes
class ForwardFitter:
    """Stand-in for the estimator's ``HyperFitter``: (lengthscale, noise) minimising the
    error of predicting the newest round's ``n_new`` gradients (at the fit coordinates) from
    the older pairs; median-distance scales x SCALE_GRID (and 4, 8), relative noises
    NOISE_GRID plus 3, 10, 30 and 100."""

    scales = (*SCALE_GRID, 4.0, 8.0)
    noises = WIDE_NOISE_GRID

    def __init__(self, est: KernelGradientEstimator, n_new: int, kernel: str) -> None:
        self.est, self.n_new, self.kernel = est, n_new, kernel
        self.hyper: Hyper | None = None

    def update(self, iteration: int, sq: torch.Tensor, ys: torch.Tensor) -> None:
        size = sq.shape[0]
        iu = torch.triu_indices(size, size, offset=1)
        dist = sq[iu[0], iu[1]].clamp_min(0).sqrt()
        dist = dist[dist > 0]
        if dist.numel() == 0:
            self.hyper = None
            return
        med = float(dist.median())
        outputscale = float((ys * ys).mean()) or 1.0
        if size < self.n_new + 3:
            self.hyper = Hyper(med, outputscale, 1e-4)
            return
        start = int(self.est._start) % self.est.history  # next slot: newest are before it
        new = [(start - 1 - i) % self.est.history for i in range(self.n_new)]
        new = [i for i in new if i < size]
        old = [i for i in range(size) if i not in new]
        best = (math.inf, med, 1e-4)
        spec = kernel_spec(self.kernel)
        for c in self.scales:
            ls = c * med
            kmat = spec.closed_form(sq / (ls * ls))
            koo, kno = kmat[old][:, old], kmat[new][:, old]
            for nz in self.noises:
                inv = host_inverse(koo, nz)
                if inv is None:
                    continue
                pred = kno @ (inv[0] @ ys[old])
                err = float(((pred - ys[new]) ** 2).mean())
                if err < best[0]:
                    best = (err, ls, nz)
        self.hyper = Hyper(best[1], outputscale, best[2])


def gp_weights(est: KernelGradientEstimator, sq: torch.Tensor) -> torch.Tensor:
    """``w = W k(q)`` ``(T0,)`` from the estimator's cached W and the query's distances."""
    kvec = evaluate_sq(est.kernel, sq, 1.0, ls_sq=est.ls_sq)
    return torch.mv(est.W, kvec)


# ------------------------------------------------------------------------------ runs
@dataclass(frozen=True)
class Config:
    method: str = "optex"  # vanilla | target | data_parallel | optex
    predictor: str = "gp"  # gp | last | meanN | zero | prior_mean | forward | loo_wide
    n: int = 8
    t0: int = 50
    noise: float | None = None
    lengthscale: float | None = None
    lr: float = 1e-3
    next_iterate: str = "last"


def run(
    prob: Problem, cfg: Config, seed: int, iters: int, goal: float | None, diag: bool = False
) -> dict[str, Any]:
    """One trajectory of ``iters`` sequential iterations; with ``goal``, the first iteration
    whose full-batch loss is <= goal. ``diag``: per-proxy-step cosines (OptEx only)."""
    grid = hyper_module.NOISE_GRID
    # The rows of the report use the grid of the time explicitly: session 1's (up to 1.0) by
    # default, and that grid extended upward for ``loo_wide`` (the package default since).
    hyper_module.NOISE_GRID = WIDE_NOISE_GRID if cfg.predictor == "loo_wide" else OLD_NOISE_GRID
    try:
        return _run(prob, cfg, seed, iters, goal, diag)
    finally:
        hyper_module.NOISE_GRID = grid


def _run(
    prob: Problem, cfg: Config, seed: int, iters: int, goal: float | None, diag: bool
) -> dict[str, Any]:
    torch.manual_seed(seed)
    theta = prob.init(seed)
    d = theta.numel()
    gen = torch.Generator().manual_seed(1000 + seed)  # the trajectory's minibatches
    gen2 = torch.Generator().manual_seed(2000 + seed)  # extra diagnostic minibatches
    adam = Adam(cfg.lr, torch.zeros(d), torch.zeros(d))
    n = cfg.n
    est = shadow = None
    if cfg.method == "optex":
        kw: dict[str, Any] = dict(noise=cfg.noise, lengthscale=cfg.lengthscale, fit_lag=1)
        est = KernelGradientEstimator(d, cfg.t0, **kw)
        if cfg.predictor == "forward":
            est.fitter = ForwardFitter(est, n, est.kernel)  # type: ignore[assignment]
        if diag:
            shadow = KernelGradientEstimator(d, cfg.t0, **kw)
    rows: list[dict[str, Any]] = []
    cos_mb: list[tuple[int, int, float]] = []  # (iteration, s, cos(mu, g_mb))
    hypers: list[Hyper] = []
    shadow_hypers: list[Hyper] = []  # the exact-gradient shadow's fits
    losses = [prob.full_loss(theta)]
    reached = None
    last_round: torch.Tensor | None = None
    last_full: torch.Tensor | None = None
    for it in range(1, iters + 1):
        if cfg.method == "vanilla":
            theta = adam.step(theta, prob.grad(theta, prob.batch(gen))[1])
        elif cfg.method == "target":
            for _ in range(n):
                theta = adam.step(theta, prob.grad(theta, prob.batch(gen))[1])
        elif cfg.method == "data_parallel":
            g = torch.stack([prob.grad(theta, prob.batch(gen))[1] for _ in range(n)]).mean(0)
            theta = adam.step(theta, g)
        else:
            assert est is not None
            theta, adam, last_round, last_full = optex_iteration(
                prob,
                cfg,
                est,
                shadow,
                theta,
                adam,
                gen,
                gen2,
                it,
                last_round,
                last_full,
                rows,
                cos_mb,
            )
            if est.hyper is not None:
                hypers.append(est.hyper)
            if shadow is not None and shadow.hyper is not None:
                shadow_hypers.append(shadow.hyper)
        losses.append(prob.full_loss(theta))
        if reached is None and goal is not None and losses[-1] <= goal:
            reached = it
    return {
        "losses": losses,
        "reached": reached,
        "rows": rows,
        "hypers": hypers,
        "shadow_hypers": shadow_hypers,
        "cos_mb": cos_mb,
    }


def optex_iteration(
    prob: Problem,
    cfg: Config,
    est: KernelGradientEstimator,
    shadow: KernelGradientEstimator | None,
    theta: torch.Tensor,
    adam: Adam,
    gen: torch.Generator,
    gen2: torch.Generator,
    it: int,
    last_round: torch.Tensor | None,
    last_full: torch.Tensor | None,
    rows: list[dict[str, Any]],
    cos_mb: list[tuple[int, int, float]],
) -> tuple[torch.Tensor, Adam, torch.Tensor, torch.Tensor | None]:
    """One OptEx round (fused-loop semantics); appends per-proxy-step diagnostics to rows
    when ``shadow`` is given."""
    n = cfg.n
    est.begin(theta)
    if shadow is not None:
        shadow.begin(theta)
    points = [theta]
    proxy = adam.copy()
    saved = [proxy.copy()]
    q = theta
    mus: list[tuple[int, torch.Tensor]] = []
    for s in range(1, n):
        if est.mode == "empty":
            points.append(theta)
            continue
        mu = est.query(q)
        if cfg.predictor in ("prior_mean", "last", "meanN", "zero") and est.mode == "gp":
            assert last_round is not None
            sq = est._queried[-1]
            w = gp_weights(est, sq)
            m = last_round.mean(0)
            if cfg.predictor == "prior_mean":
                mu = mu + (1.0 - w.sum()) * m
            elif cfg.predictor == "last":
                mu = last_round[-1].clone()
            elif cfg.predictor == "meanN":
                mu = m.clone()
            else:
                mu = torch.zeros_like(mu)
        if shadow is not None and est.mode == "gp" and last_round is not None:
            sq = est._queried[-1]
            w = gp_weights(est, sq)
            kvec = evaluate_sq(est.kernel, sq, 1.0, ls_sq=est.ls_sq)
            hyp = est.hyper
            g_full = prob.grad(q, prob.gfull)[1]
            g_mb2 = prob.grad(q, prob.batch(gen2))[1]
            mu_ex = shadow.query(q)
            m = last_round.mean(0)
            preds = {
                "mu": mu,
                "mu_exact": mu_ex,
                "mu_prior": mu + (1.0 - w.sum()) * m,
                "last": last_round[-1],
                "meanN": m,
                "last_full": last_full,
                "mb2": g_mb2,
            }
            row: dict[str, Any] = {
                "it": it,
                "s": s,
                "var": float(1.0 - torch.dot(kvec, w)),
                "wsum": float(w.sum()),
                "dist_ls": float(sq[: est.size].min().sqrt()) / hyp.lengthscale
                if hyp
                else math.nan,
                "norm_mu/full": float(mu.norm() / g_full.norm()),
                "_preds": preds,
                "_full": g_full,
            }
            for key, val in preds.items():
                row[f"{key}|full"] = math.nan if val is None else cos(val, g_full)
            rows.append(row)
        elif shadow is not None and shadow.mode != "empty":
            shadow.query(q)
        mus.append((s, mu))
        q = proxy.step(q, mu)
        points.append(q)
        saved.append(proxy.copy())
    evals = [prob.grad(p, prob.batch(gen)) for p in points]
    grads = torch.stack([g for _, g in evals])
    for s, mu in mus:
        cos_mb.append((it, s, cos(mu, grads[s - 1])))
    for row in rows:
        if row["it"] == it and "_preds" in row:  # cosines with the round's minibatch grads
            g_mb = grads[row["s"] - 1]
            for key, val in row.pop("_preds").items():
                row[f"{key}|mb"] = math.nan if val is None else cos(val, g_mb)
            row["mb|full"] = cos(g_mb, row.pop("_full"))
    P = torch.stack(points)
    est.append(P, grads, iteration=it, queried=est.queried_distances())
    full_last = None
    if shadow is not None:
        fulls = torch.stack([prob.grad(p, prob.gfull)[1] for p in points])
        shadow.append(P, fulls, iteration=it, queried=shadow.queried_distances())
        full_last = fulls[-1]
    ran = est.mode != "empty"
    if cfg.next_iterate == "best":
        j = min(range(n), key=lambda i: evals[i][0])
    else:
        j = n - 1
    state = saved[j] if ran else adam
    true = state.copy()
    new = true.step(points[j], grads[j])
    return new, true, grads, full_last


# ------------------------------------------------------------------------------ tables
def table_cosines(rows: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """Median over iterations of every recorded quantity, per proxy step s."""
    out = []
    for s in range(1, n):
        rs = [r for r in rows if r["s"] == s]
        rec: dict[str, Any] = {"s": s, "count": len(rs)}
        for key in rs[0]:
            if key not in ("it", "s"):
                vals = [r[key] for r in rs if not math.isnan(r[key])]
                rec[key] = statistics.median(vals) if vals else math.nan
        out.append(rec)
    return out


def fmt(x: Any) -> str:
    return "-" if x is None else str(x)


def variant_configs(lr: float, ls_med: float) -> dict[str, Config]:
    """The rows of table (3): baselines, OptEx options, swapped predictors and the fixes."""
    return {
        "vanilla": Config(method="vanilla", lr=lr),
        "target": Config(method="target", lr=lr),
        "data_parallel": Config(method="data_parallel", lr=lr),
        "optex (defaults)": Config(lr=lr),
        "optex next_iterate=best": Config(lr=lr, next_iterate="best"),
        "proxy on last gradient": Config(lr=lr, predictor="last"),
        "proxy on meanN": Config(lr=lr, predictor="meanN"),
        "proxy on zero (momentum only)": Config(lr=lr, predictor="zero"),
        "optex noise=0.1": Config(lr=lr, noise=0.1),
        "optex noise=10": Config(lr=lr, noise=10.0),
        "optex noise=30": Config(lr=lr, noise=30.0),
        "optex noise=100": Config(lr=lr, noise=100.0),
        "optex LOO noise grid up to 100": Config(lr=lr, predictor="loo_wide"),
        "optex LOO noise grid up to 100 + best": Config(
            lr=lr, predictor="loo_wide", next_iterate="best"
        ),
        "optex noise=10 + best": Config(lr=lr, noise=10.0, next_iterate="best"),
        "optex lengthscale=4x median": Config(lr=lr, lengthscale=4 * ls_med),
        "optex T0=10": Config(lr=lr, t0=10),
        "optex T0=200": Config(lr=lr, t0=200),
        "optex N=2": Config(lr=lr, n=2),
        "optex N=4": Config(lr=lr, n=4),
        "target N=2": Config(method="target", lr=lr, n=2),
        "target N=4": Config(method="target", lr=lr, n=4),
        "data_parallel N=4": Config(method="data_parallel", lr=lr, n=4),
        "fix a: prior_mean": Config(lr=lr, predictor="prior_mean"),
        "fix b: forward-validated fit": Config(lr=lr, predictor="forward"),
    }


def print_cosines(cos_rows: list[dict[str, Any]], first: int, last: int) -> None:
    print(f"\n## (1) median cosines per proxy step s (seed 0, iterations {first}..{last})\n")
    cols = ("mu", "mu_exact", "last", "meanN", "last_full", "mu_prior", "mb2")
    print(
        "| s | "
        + " | ".join(f"{c} vs mb / full" for c in cols)
        + " | mb vs full | norm mu/full | post. var | 1^T W k | dist/ls |"
    )
    print("|" + "---|" * (len(cols) + 6))
    for rec in cos_rows:
        cells = [f"{rec[c + '|mb']:.2f} / {rec[c + '|full']:.2f}" for c in cols]
        print(
            f"| {rec['s']} | "
            + " | ".join(cells)
            + f" | {rec['mb|full']:.2f} | {rec['norm_mu/full']:.2f} | {rec['var']:.3f}"
            f" | {rec['wsum']:.2f} | {rec['dist_ls']:.2f} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--width", type=int, default=1024, help="MLP width (H200 run: 1024)")
    ap.add_argument("--inputs", type=int, default=256)
    ap.add_argument("--n", type=int, default=8192, help="data set size")
    ap.add_argument("--full-batch", type=int, default=2048, help="samples of 'g_full'")
    ap.add_argument("--iters", type=int, default=40, help="vanilla's iterations (the goal)")
    ap.add_argument("--cap", type=int, default=40, help="iterations a method may take")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seeds", default="0", help="comma-separated seeds of table (3)")
    ap.add_argument(
        "--sections", default="package,cos,widths,variants", help="which tables, comma-separated"
    )
    ap.add_argument("--only", default=None, help="comma-separated variant labels (table 3)")
    ap.add_argument("--ls-median", type=float, default=None, help="skip (1)'s fit for it")
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    sections = args.sections.split(",")
    prob = Problem(args.width, args.inputs, args.n, args.full_batch)
    seeds = [int(x) for x in args.seeds.split(",")]
    K, cap, lr = args.iters, args.cap, args.lr
    report: dict[str, Any] = {"args": vars(args)}
    print(
        f"# MLP width {args.width}, inputs {args.inputs}, n {args.n}: d ="
        f" {prob.init(0).numel()}; Adam lr {lr}, N 8, T0 50, goal = vanilla at {K}"
    )
    ls_med = args.ls_median
    if "cos" in sections:
        diag = run(prob, Config(lr=lr), seed=0, iters=K, goal=None, diag=True)
        cos_rows = table_cosines([r for r in diag["rows"] if r["it"] > 7], 8)
        report["cosines"] = cos_rows
        print_cosines(cos_rows, 8, K)
        hyp = diag["hypers"][7:]
        ls_med = statistics.median(h.lengthscale for h in hyp)
        noises = sorted({h.noise for h in hyp})
        sh = diag["shadow_hypers"][7:]
        report["fitted"] = {"noise": [h.noise for h in hyp], "ls": [h.lengthscale for h in hyp]}
        report["fitted_exact"] = {"noise": [h.noise for h in sh], "ls": [h.lengthscale for h in sh]}
        print(
            f"\nfitted by the LOO heuristic (iterations 8..{K}): relative noise median"
            f" {statistics.median(h.noise for h in hyp):.3g} (values {noises}), lengthscale"
            f" median {ls_med:.3g}; on the full-batch gradients (mu_exact): noise median"
            f" {statistics.median(h.noise for h in sh):.3g}, lengthscale median"
            f" {statistics.median(h.lengthscale for h in sh):.3g}"
        )
        sys.stdout.flush()
    if "package" in sections:
        print("\n## the package's optimizers (optex_gpu.Runner, vmap executor), seed 0\n")
        print("| optimizer | iterations to vanilla's loss | loss |")
        print("|---|---|---|")
        goal_p: float | None = None
        for label in ("vanilla", "optex", "target", "data_parallel"):
            runner = Runner(prob.obj, specs(lr)[label])
            done = 0
            while done < K:
                runner.step()
                done += 1
                if goal_p is not None and prob.obj.evaluate(runner.params())["loss"] <= goal_p:
                    break
            loss_p = prob.obj.evaluate(runner.params())["loss"]
            goal_p = loss_p if goal_p is None else goal_p
            print(f"| {label} | {done if loss_p <= goal_p else '-'} | {loss_p:.4f} |")
            sys.stdout.flush()
    if "widths" in sections:
        print(f"\n## width sweep: iterations to vanilla's {K}-iteration loss (seed 0)\n")
        print("| width | d | vanilla loss | optex | target | data_parallel |")
        print("|---|---|---|---|---|---|")
        for width in (128, 256, 512, 1024):
            pw = Problem(width, args.inputs, args.n, args.full_batch)
            goal = run(pw, Config(method="vanilla", lr=lr), 0, K, None)["losses"][-1]
            cells = [
                fmt(run(pw, Config(method=m, lr=lr), 0, cap, goal)["reached"])
                for m in ("optex", "target", "data_parallel")
            ]
            d = pw.init(0).numel()
            print(f"| {width} | {d} | {goal:.4f} | " + " | ".join(cells) + " |")
            sys.stdout.flush()
    if "variants" in sections:
        variants = variant_configs(lr, ls_med if ls_med is not None else 1.0)
        if args.only:
            keep = args.only.split(",")
            variants = {k: v for k, v in variants.items() if k in keep}
        vanilla = Config(method="vanilla", lr=lr)
        goals = {s: run(prob, vanilla, s, K, None)["losses"][-1] for s in seeds}
        print(f"\n## (2)/(3) sequential iterations to vanilla's {K}-iteration full loss")
        print(f"(cap {cap}; '-' = not reached; seeds {seeds})\n")
        print(
            f"| variant | iterations per seed | loss at {K} (mean) | fitted noise (median) |"
            " cos(mu, g_mb) s=1 / 4 / N-1 (median, iterations > 7) |"
        )
        print("|---|---|---|---|---|")
        counts: dict[str, Any] = {}
        for label, cfg in variants.items():
            per, fin, noises_v = [], [], []
            cm: list[tuple[int, int, float]] = []
            for s in seeds:
                r = run(prob, cfg, s, max(cap, K), goals[s])
                per.append(r["reached"] if r["reached"] is None or r["reached"] <= cap else None)
                fin.append(r["losses"][K])
                noises_v += [h.noise for h in r["hypers"][7:]]
                cm += [c for c in r["cos_mb"] if c[0] > 7]
            nz = statistics.median(noises_v) if noises_v else None
            steps = (1, 4, cfg.n - 1) if cfg.n > 4 else tuple(range(1, cfg.n))
            cs = [[c[2] for c in cm if c[1] == st] for st in steps]
            cos_txt = " / ".join(f"{statistics.median(c):.2f}" for c in cs if c) or "-"
            counts[label] = {"reached": per, "loss_at_K": fin, "noise": nz, "cos_mb": cos_txt}
            print(
                f"| {label} | {' / '.join(fmt(p) for p in per)} | {statistics.mean(fin):.4f} |"
                f" {'-' if nz is None else f'{nz:.3g}'} | {cos_txt} |"
            )
            sys.stdout.flush()
        report["counts"], report["goals"] = counts, goals
    print(f"\n(total {time.perf_counter() - t_start:.0f} s)")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
