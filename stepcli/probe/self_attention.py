"""Self-attention probe: transformer blocks over every token of every frame, then mean pooling.

Without positional encoding, self-attention is permutation-equivariant and the mean is
permutation-invariant, so this probe cannot see frame order (the failure STEP fixes).
"""

from __future__ import annotations

from torch import Tensor, nn

from stepcli import StepcliError
from stepcli.cache.records import TokenLayout
from stepcli.probe.base import Attention, Mlp, Probe, resolve_num_heads


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


class SelfAttentionProbe(Probe):
    """`depth` pre-norm blocks over all T*(P+N) tokens -> mean pool -> LayerNorm -> Linear.

    Following the paper's Figure 4 ("frame-wise embeddings with self-attention and mean pooling"),
    the prefix/CLS tokens of every frame take part alongside the patch tokens.
    """

    name = "self-attention"

    def __init__(
        self,
        layout: TokenLayout,
        num_classes: int,
        *,
        depth: int = 1,
        num_heads: int | None = None,
        mlp_ratio: float = 4.0,
    ) -> None:
        num_heads = resolve_num_heads(layout.dim, num_heads)
        options = dict(depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio)
        super().__init__(layout, num_classes, **options)
        if depth < 1:
            raise StepcliError(f"self-attention probe: depth must be >= 1, got {depth}")
        self.blocks = nn.Sequential(*(TransformerBlock(layout.dim, num_heads, mlp_ratio) for _ in range(depth)))

    def forward_features(self, tokens: Tensor) -> Tensor:
        """`[B, T, P+N, D]` -> `[B, T*(P+N), D]` through the blocks -> mean `[B, D]`."""
        return self.blocks(tokens.flatten(1, 2)).mean(dim=1)
