"""Self-attention probe: transformer blocks over every token of every frame, then mean pooling.

Without positional encoding, self-attention is permutation-equivariant and the mean is
permutation-invariant, so this probe cannot see frame order (the failure STEP fixes), unless
`temporal_pe` adds a learned encoding per frame: the order-aware control for STEP.
"""

from __future__ import annotations

from torch import Tensor, nn

from stepcli.cache.records import TokenLayout
from stepcli.errors import StepcliError
from stepcli.probe.models.base import Probe
from stepcli.probe.models.layers import TransformerBlock, add_temporal_encoding, resolve_num_heads, temporal_encoding
from stepcli.probe.models.registry import register


@register("self-attention")
class SelfAttentionProbe(Probe):
    """`depth` pre-norm blocks over all T*(P+N) tokens -> mean pool -> LayerNorm -> Linear.

    Following the paper's Figure 4 ("frame-wise embeddings with self-attention and mean pooling"),
    the prefix/CLS tokens of every frame take part alongside the patch tokens.
    """

    no_weight_decay_names = ("temporal_pe",)

    def __init__(
        self,
        layout: TokenLayout,
        num_classes: int,
        *,
        depth: int = 1,
        num_heads: int | None = None,
        mlp_ratio: float = 4.0,
        temporal_pe: bool = False,
    ) -> None:
        num_heads = resolve_num_heads(layout.dim, num_heads)
        options = dict(depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, temporal_pe=temporal_pe)
        super().__init__(layout, num_classes, **options)
        if depth < 1:
            raise StepcliError(f"self-attention probe: depth must be >= 1, got {depth}")
        self.blocks = nn.Sequential(*(TransformerBlock(layout.dim, num_heads, mlp_ratio) for _ in range(depth)))
        self.temporal_pe = temporal_encoding(temporal_pe, layout.num_frames, layout.dim)

    @property
    def order_aware(self) -> bool:
        return self.temporal_pe is not None

    def forward_features(self, tokens: Tensor) -> Tensor:
        """`[B, T, P+N, D]` -> `[B, T*(P+N), D]` through the blocks -> mean `[B, D]`."""
        tokens = add_temporal_encoding(tokens, self.temporal_pe)
        return self.blocks(tokens.flatten(1, 2)).mean(dim=1)
