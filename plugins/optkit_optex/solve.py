"""The estimator's solve ``W = (K + noise I)^-1``, with a jitter ladder, on the host or on the
device.

Both rules try the relative jitters of :data:`JITTERS` in order (times the mean diagonal of
``K + noise I``) and keep the first rung whose Cholesky factor exists and whose inverse is
finite. The host rule stops at that rung; the device rule runs every rung as one batch and
picks it with tensor operations, so it never synchronises with the host and can be captured
in a CUDA graph. Neither raises: when no rung works the caller falls back (the estimator then
returns the newest stored gradient).
"""

from __future__ import annotations

import torch

JITTERS: tuple[float, ...] = (0.0, 1e-8, 1e-6, 1e-4, 1e-2)
"""Relative jitter ladder (times the mean diagonal of ``K + s^2 I``) tried for Cholesky."""


def host_inverse(kmat: torch.Tensor, noise: float) -> tuple[torch.Tensor, float] | None:
    """``(K + noise I + jitter I)^-1`` and the relative jitter used, or ``None``.

    Args:
        kmat: ``(n, n)`` kernel matrix (float64, host) over the stored points.
        noise: relative noise ``s^2 / outputscale``.
    """
    n = kmat.shape[0]
    eye = torch.eye(n, dtype=kmat.dtype)
    amat = kmat + noise * eye
    scale = float(amat.diagonal().mean())
    for jitter in JITTERS:
        chol, info = torch.linalg.cholesky_ex(amat + jitter * scale * eye)
        if int(info) == 0:
            inv = torch.cholesky_inverse(chol)
            if bool(torch.isfinite(inv).all()):  # also catches a non-finite factor
                return inv, jitter
    return None


def device_inverse(
    kmat: torch.Tensor,
    valid: torch.Tensor,
    noise: torch.Tensor,
    jitters: torch.Tensor,
    eye: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ladder of :func:`host_inverse` in one batch, without host synchronisation.

    Args:
        kmat: ``(T0, T0)`` float64 kernel matrix over all ring slots, zero outside the valid
            ones.
        valid: ``(T0,)`` float64, 1.0 for a stored slot; invalid slots get identity rows and
            columns, so every matrix stays positive definite and ``W`` is zero there.
        noise: ``()`` or ``(1,)`` relative noise (a tensor, so that it can change between
            replays of a captured graph).
        jitters: ``(R,)`` float64, :data:`JITTERS` on the device.
        eye: ``(T0, T0)`` float64 identity on the device.

    Returns:
        ``W`` ``(T0, T0)`` (zero when no rung works), ``ok`` ``()`` bool (a rung worked) and
        ``rung`` ``(1,)`` long (the first rung that worked; 0 when none did).
    """
    vv = valid[:, None] * valid[None, :]
    amat = kmat * vv + torch.diag(noise * valid + (1.0 - valid))
    scale = (amat.diagonal() * valid).sum() / valid.sum()
    ladder = amat + (jitters * scale)[:, None, None] * eye  # (R, T0, T0)
    chol, info = torch.linalg.cholesky_ex(ladder)
    linv = torch.linalg.solve_triangular(chol, eye.expand_as(ladder), upper=False)
    inv = linv.mT @ linv
    ok = (info == 0) & torch.isfinite(inv).flatten(1).all(1)  # (R,)
    rung = torch.argmax(ok.to(torch.int32)).view(1)  # the first ok rung (0 if none)
    any_ok = ok.any()
    w = inv.index_select(0, rung)[0] * vv
    return torch.where(any_ok, w, torch.zeros_like(w)), any_ok, rung
