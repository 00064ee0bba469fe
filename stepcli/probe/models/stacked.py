"""Layers over K stacked heads: parameters carry a leading head axis `[K, ...]`, activations `[K, B, ...]`.

A sweep or a set of seeds trains K copies of one probe that differ only in their numbers, so
their layers can run as one batched operation each instead of K small ones. The one-query
readout (`single_query_pool`) goes further: K heads reading the same tokens cost about one
pass over them, because a single query never needs the context tokens projected (see
`Attention.forward_first`) and a LayerNorm of `x + pe_k` is x's own statistics plus `x . pe_k`.

Tokens are either shared by all heads, `[B, T, N, D]`, or one batch per head, `[K, B, T, N, D]`
(seeds with their own batch order).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-5  # nn.LayerNorm's default, the one every probe uses


def stacked_linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """`x [K, ..., In]` through K Linear layers `weight [K, Out, In]`, `bias [K, Out]` -> `[K, ..., Out]`."""
    k = x.shape[0]
    flat = x.reshape(k, -1, x.shape[-1])
    return torch.baddbmm(bias[:, None], flat, weight.transpose(1, 2)).view(*x.shape[:-1], weight.shape[1])


def stacked_layer_norm(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """`x [K, ..., D]` through K LayerNorms with affine `weight`, `bias` `[K, D]`."""
    shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)
    return torch.addcmul(bias.view(shape), F.layer_norm(x, x.shape[-1:], eps=EPS), weight.view(shape))


def stacked_mlp(x: Tensor, params: dict[str, Tensor], prefix: str) -> Tensor:
    """`Mlp` (fc1, GELU, fc2) of K heads on `x [K, ..., D]`; `prefix` names its parameters."""
    hidden = F.gelu(stacked_linear(x, params[f"{prefix}fc1.weight"], params[f"{prefix}fc1.bias"]))
    return stacked_linear(hidden, params[f"{prefix}fc2.weight"], params[f"{prefix}fc2.bias"])


def _token_dot(xc: Tensor, a: Tensor) -> Tensor:
    """`a [K, h, D] . xc` for every token: `[K, B, h, C]`; shared tokens `[B, C, D]` take one GEMM."""
    k, h, d = a.shape
    if xc.ndim == 3:
        b, c, _ = xc.shape
        return (xc.reshape(b * c, d) @ a.reshape(k * h, d).T).view(b, c, k, h).permute(2, 0, 3, 1)
    b, c = xc.shape[1:3]
    return (xc.reshape(k, b * c, d) @ a.transpose(1, 2)).view(k, b, c, h).transpose(2, 3)


def _weighted_tokens(u: Tensor, xc: Tensor) -> Tensor:
    """`sum_c u[k, b, h, c] xc[(k,) b, c]`: `[K, B, h, D]`; shared tokens take one GEMM per clip."""
    k, b, h, c = u.shape
    if xc.ndim == 3:
        out = u.permute(1, 0, 2, 3).reshape(b, k * h, c) @ xc
        return out.view(b, k, h, -1).transpose(0, 1)
    return (u.reshape(k * b, h, c) @ xc.reshape(k * b, c, -1)).view(k, b, h, -1)


def single_query_pool(
    query: Tensor,
    w_kv: Tensor,
    b_kv: Tensor,
    tokens: Tensor,
    norm_weight: Tensor,
    norm_bias: Tensor,
    pe: Tensor | None = None,
    first: Tensor | None = None,
) -> Tensor:
    """K heads' attention output (before `proj`) of one query each over LayerNorm(tokens + pe), `[K, B, D]`.

    `query [K, h, D/h]` is each head's projected, scaled query (independent of the clip); `w_kv
    [K, 2D, D]`, `b_kv [K, 2D]` its key/value projection; `tokens` `[B, T, N, D]` shared or `[K, B,
    T, N, D]`; `norm_weight`, `norm_bias` `[K, D]` the LayerNorm applied to `tokens + pe[k, t]`
    (`pe [K, T, D]`, optional). `first [K, D]`, when given, is an already normed token that every
    clip's sequence starts with (STEP's global CLS), attended to like the others.

    The context tokens are never projected nor normed per head: with `xc` the tokens centred over
    D (shared) and `pc` the centred encodings, the normed token is `(xc + pc) * rstd * g + b`,
    where `rstd` needs only `|xc|^2`, `xc . pc` and `|pc|^2`; the scores are then `(W_k^T q) * g`
    dotted with `xc + pc`, and the weighted sum of normed tokens is `g` times the weighted sum of
    `xc + pc` plus `b`. What touches every token is one GEMM against `[K*h, D]` and one back.
    """
    k, h, dh = query.shape
    d = tokens.shape[-1]
    t, n = tokens.shape[-3], tokens.shape[-2]
    shared = tokens.ndim == 4
    w_k, w_v = w_kv.view(k, 2, h, dh, d).unbind(1)
    keys = torch.einsum("khe,khed->khd", query, w_k)  # W_k^T q: [K, h, D]
    a = keys * norm_weight[:, None]
    xc = tokens - tokens.mean(-1, keepdim=True)
    sq = xc.pow(2).sum(-1)  # [(K,) B, T, N]
    if pe is not None:
        pc = pe - pe.mean(-1, keepdim=True)  # [K, T, D]
        cross = torch.einsum("btnd,ktd->kbtn" if shared else "kbtnd,ktd->kbtn", xc, pc)
        var = (sq + 2 * cross + pc.pow(2).sum(-1)[:, None, :, None]) / d
    else:
        var = sq / d if not shared else (sq / d).unsqueeze(0)
    xc = xc.flatten(-3, -2)  # [(K,) B, C, D], C = T * N
    rstd = (var + EPS).rsqrt().flatten(-2)[:, :, None]  # [K or 1, B, 1, C]
    dots = _token_dot(xc, a)
    if pe is not None:
        dots = dots + torch.einsum("khd,ktd->kht", a, pc).repeat_interleave(n, dim=-1)[:, None]
    bias_dot = (keys * norm_bias[:, None]).sum(-1)[:, None, :, None]  # [K, 1, h, 1]
    scores = dots * rstd + bias_dot
    b = scores.shape[1]
    if first is not None:
        first_score = (keys * first[:, None]).sum(-1)[:, None, :, None].expand(k, b, h, 1)
        scores = torch.cat([first_score, scores], dim=-1)
    weights = scores.softmax(dim=-1)
    token_weights = weights[..., 1:] if first is not None else weights
    u = token_weights * rstd
    pooled = _weighted_tokens(u, xc)
    if pe is not None:
        pooled = pooled + u.view(k, b, h, t, n).sum(-1) @ pc[:, None]
    pooled = pooled * norm_weight[:, None, None] + token_weights.sum(-1, keepdim=True) * norm_bias[:, None, None]
    if first is not None:
        pooled = pooled + weights[..., :1] * first[:, None, None]
    out = torch.einsum("kbhd,khed->kbhe", pooled, w_v).reshape(k, b, d)
    return out + b_kv[:, None, d:]


def stacked_query(params: dict[str, Tensor], prefix: str, x: Tensor, num_heads: int) -> Tensor:
    """Attention `prefix`'s projected, scaled query `[K, h, D/h]` of one token per head, `x [K, D]`."""
    k, d = x.shape
    q = stacked_linear(x[:, None], params[f"{prefix}q.weight"], params[f"{prefix}q.bias"])[:, 0]
    return q.view(k, num_heads, d // num_heads) * (d // num_heads) ** -0.5
