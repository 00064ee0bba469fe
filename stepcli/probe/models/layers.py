"""The layers the probes share: multi-head attention (with the one-query readout), the MLP, the
pre-norm transformer block, learned tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stepcli.errors import StepcliError


def resolve_num_heads(dim: int, num_heads: int | None, preferred: int = 12) -> int:
    """`preferred` heads (12: 64-wide for ViT-B) when D allows it, else the largest divisor of D below it."""
    if num_heads is None:
        return next(h for h in range(min(preferred, dim), 0, -1) if dim % h == 0)
    if num_heads < 1 or dim % num_heads:
        raise StepcliError(f"num_heads={num_heads} must be a positive divisor of the token width D={dim}")
    return num_heads


class Attention(nn.Module):
    """Multi-head attention: queries `x [B, L, D]` attend to `context [B, S, D]` (to `x` if None).

    `proj=False` drops the output projection, as V-JEPA's cross-attention pooler does.
    """

    def __init__(self, dim: int, num_heads: int, proj: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim) if proj else nn.Identity()

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        context = x if context is None else context
        (b, n, d), s, h = x.shape, context.shape[1], self.num_heads
        q = self.q(x).view(b, n, h, d // h).transpose(1, 2)
        k, v = self.kv(context).view(b, s, 2, h, d // h).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))

    def forward_first(self, first: Tensor, others: Tensor) -> Tensor:
        """Output row 0 only, `[B, D]`, of `forward` on the sequence `[first; others]` (`[B, D]`, `[B, S, D]`).

        When only one output row is needed (STEP's global CLS at the last block), the key and
        value projections can be moved off the S context tokens: `q . (W_k c + b_k)` is
        `(W_k^T q) . c` plus a term constant over c that softmax ignores, and the attention-
        weighted sum of `W_v c + b_v` is `W_v` applied to the weighted sum of c, plus `b_v`.
        Each context token then costs O(heads * D) instead of O(D^2): the same function and
        gradients (up to float rounding) at a small fraction of the cost. The first row is kept
        apart rather than concatenated, which would copy the whole sequence.
        """
        (b, d), h = first.shape, self.num_heads
        w_k, w_v = self.kv.weight.view(2, h, d // h, d)
        q = self.q(first).view(b, h, d // h) * (d // h) ** -0.5
        keys = torch.einsum("bhe,hed->bhd", q, w_k)
        scores = torch.cat([torch.einsum("bhd,bd->bh", keys, first)[..., None], keys @ others.transpose(1, 2)], -1)
        weights = scores.softmax(dim=-1)
        pooled = weights[..., :1] * first[:, None] + weights[..., 1:] @ others
        out = torch.einsum("bhd,hed->bhe", pooled, w_v).reshape(b, d) + self.kv.bias[d:]
        return self.proj(out)

    def first_weights(self, first: Tensor, others: Tensor) -> Tensor:
        """The attention weights `[B, heads, 1+S]` of row 0 in `forward_first`: where that one token looks."""
        (b, d), h = first.shape, self.num_heads
        w_k = self.kv.weight.view(2, h, d // h, d)[0]
        q = self.q(first).view(b, h, d // h) * (d // h) ** -0.5
        keys = torch.einsum("bhe,hed->bhd", q, w_k)
        scores = torch.cat([torch.einsum("bhd,bd->bh", keys, first)[..., None], keys @ others.transpose(1, 2)], -1)
        return scores.softmax(dim=-1)


class Mlp(nn.Module):
    """The transformer feed-forward part: `[B, L, D] -> [B, L, D]` through a GELU hidden layer."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TransformerBlock(nn.Module):
    """Standard pre-norm ViT block on `[B, L, D]`: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, num_heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim, mlp_ratio)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    def forward_first(self, first: Tensor, others: Tensor) -> Tensor:
        """Row 0 of `forward([first; others])`, `[B, D]`: all a CLS readout after the last block needs."""
        first = first + self.attn.forward_first(self.norm1(first), self.norm1(others))
        return first + self.mlp(self.norm2(first))


def temporal_encoding(enabled: bool, num_frames: int, dim: int) -> nn.Parameter | None:
    """A learned encoding per frame, `[T, D]`, to add to every token of frame t, or None when off:
    the one thing that lets an attention probe tell frame orders apart."""
    if not isinstance(enabled, bool):
        raise StepcliError(f"temporal_pe must be true or false, got {enabled!r}")
    return init_token(num_frames, dim) if enabled else None


def add_temporal_encoding(tokens: Tensor, encoding: Tensor | None) -> Tensor:
    """`tokens [B, T, L, D]` with frame t's encoding (`encoding [T, D]`) added to each of its tokens;
    as they are when there is none."""
    return tokens if encoding is None else tokens + encoding[None, :, None, :]


def init_token(*shape: int) -> nn.Parameter:
    """A learned token / embedding, initialised as in ViT and V-JEPA (truncated normal, std .02)."""
    return nn.Parameter(nn.init.trunc_normal_(torch.empty(*shape), std=0.02))
