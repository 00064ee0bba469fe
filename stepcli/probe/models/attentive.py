"""Attentive probe (V-JEPA style): one learnable query cross-attends to every token of the clip.

Cross-attention from a single query is a weighted sum over the keys, so permuting the frames
leaves the output unchanged: the probe is order-blind.
"""

from __future__ import annotations

from torch import Tensor, nn

from stepcli.cache.records import TokenLayout
from stepcli.probe.models.base import Probe
from stepcli.probe.models.layers import Attention, Mlp, init_token, resolve_num_heads
from stepcli.probe.models.registry import register


@register("attentive")
class AttentiveProbe(Probe):
    """query + CrossAttn(query, LN(tokens)) -> + MLP(LN(.)) -> LayerNorm -> Linear.

    As in V-JEPA's `AttentivePooler`, the keys/values are the layer-normed tokens of all T frames
    `[B, T*(P+N), D]`, and the pooled query passes through a pre-norm residual MLP.
    """

    no_weight_decay_names = ("query",)

    def __init__(
        self,
        layout: TokenLayout,
        num_classes: int,
        *,
        num_heads: int | None = None,
        mlp_ratio: float = 4.0,
    ) -> None:
        num_heads = resolve_num_heads(layout.dim, num_heads)
        options = dict(num_heads=num_heads, mlp_ratio=mlp_ratio)
        super().__init__(layout, num_classes, **options)
        dim = layout.dim
        self.query = init_token(1, 1, dim)
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, num_heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim, mlp_ratio)

    def forward_features(self, tokens: Tensor) -> Tensor:
        """`[B, T, P+N, D]` -> `[B, D]`."""
        context = self.norm1(tokens.flatten(1, 2))
        x = self.query.expand(context.shape[0], -1, -1)
        x = x + self.attn(x, context)
        x = x + self.mlp(self.norm2(x))
        return x[:, 0]
