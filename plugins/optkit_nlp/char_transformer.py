"""A small causal transformer as pure functions of a params dict (vmap-friendly: explicit
matrix products, a constant causal mask, no modules, no buffers).

Parameter names and shapes for vocabulary ``V``, context ``T``, width ``D``, ``L`` layers:
``tok`` ``(V, D)``, ``pos`` ``(T, D)``; per layer ``l``: ``h{l}.ln1.w/b`` ``(D,)``,
``h{l}.qkv.w`` ``(3D, D)``, ``h{l}.qkv.b`` ``(3D,)``, ``h{l}.proj.w`` ``(D, D)``,
``h{l}.proj.b`` ``(D,)``, ``h{l}.ln2.w/b`` ``(D,)``, ``h{l}.fc.w`` ``(4D, D)``,
``h{l}.fc.b`` ``(4D,)``, ``h{l}.out.w`` ``(D, 4D)``, ``h{l}.out.b`` ``(D,)``; then
``lnf.w/b`` ``(D,)`` and ``head.w`` ``(V, D)``, ``head.b`` ``(V,)`` (GPT-2 layout, pre-norm).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from optkit.interfaces import Params


@dataclass(frozen=True)
class CharTransformerConfig:
    vocab: int
    context: int
    width: int
    layers: int
    heads: int


def init_params(
    cfg: CharTransformerConfig,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
) -> Params:
    """GPT-2 style initialization (normal std 0.02; residual projections scaled by
    ``1/sqrt(2 L)``; LayerNorm weight 1, biases 0), drawn with ``generator``."""
    d, v, t = cfg.width, cfg.vocab, cfg.context

    def normal(shape: tuple[int, ...], std: float = 0.02) -> torch.Tensor:
        x = torch.randn(shape, generator=generator, device=generator.device, dtype=dtype)
        return (x * std).to(device)

    def const(shape: tuple[int, ...], value: float) -> torch.Tensor:
        return torch.full(shape, value, device=device, dtype=dtype)

    res_std = 0.02 / math.sqrt(2 * cfg.layers)
    p: Params = {"tok": normal((v, d)), "pos": normal((t, d))}
    for i in range(cfg.layers):
        h = f"h{i}."
        p[h + "ln1.w"], p[h + "ln1.b"] = const((d,), 1.0), const((d,), 0.0)
        p[h + "qkv.w"], p[h + "qkv.b"] = normal((3 * d, d)), const((3 * d,), 0.0)
        p[h + "proj.w"], p[h + "proj.b"] = normal((d, d), res_std), const((d,), 0.0)
        p[h + "ln2.w"], p[h + "ln2.b"] = const((d,), 1.0), const((d,), 0.0)
        p[h + "fc.w"], p[h + "fc.b"] = normal((4 * d, d)), const((4 * d,), 0.0)
        p[h + "out.w"], p[h + "out.b"] = normal((d, 4 * d), res_std), const((d,), 0.0)
    p["lnf.w"], p["lnf.b"] = const((d,), 1.0), const((d,), 0.0)
    p["head.w"], p["head.b"] = normal((v, d)), const((v,), 0.0)
    return p


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return x @ w.T + b


def logits(cfg: CharTransformerConfig, params: Params, tokens: torch.Tensor) -> torch.Tensor:
    """Next-character logits ``(B, S, V)`` for int64 ``tokens`` ``(B, S)``, ``S <= context``."""
    b, s = tokens.shape
    d, nh = cfg.width, cfg.heads
    hd = d // nh
    x = params["tok"][tokens] + params["pos"][:s]
    causal = torch.ones(s, s, dtype=torch.bool, device=tokens.device).tril()
    for i in range(cfg.layers):
        h = f"h{i}."
        y = F.layer_norm(x, (d,), params[h + "ln1.w"], params[h + "ln1.b"])
        q, k, v = _linear(y, params[h + "qkv.w"], params[h + "qkv.b"]).split(d, dim=-1)
        q, k, v = (z.reshape(b, s, nh, hd).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
        att = att.masked_fill(~causal, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, s, d)
        x = x + _linear(y, params[h + "proj.w"], params[h + "proj.b"])
        y = F.layer_norm(x, (d,), params[h + "ln2.w"], params[h + "ln2.b"])
        y = F.gelu(_linear(y, params[h + "fc.w"], params[h + "fc.b"]))
        x = x + _linear(y, params[h + "out.w"], params[h + "out.b"])
    x = F.layer_norm(x, (d,), params["lnf.w"], params["lnf.b"])
    return _linear(x, params["head.w"], params["head.b"])


def lm_loss(cfg: CharTransformerConfig, params: Params, windows: torch.Tensor) -> torch.Tensor:
    """Mean next-character cross-entropy (nats) of int64 ``windows`` ``(B, S + 1)``."""
    out = logits(cfg, params, windows[:, :-1])
    return F.cross_entropy(out.reshape(-1, cfg.vocab), windows[:, 1:].reshape(-1))
