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
from stepcli.probe.models.stacked import (
    single_query_pool,
    stacked_layer_norm,
    stacked_linear,
    stacked_mlp,
    stacked_query,
)


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

    def stacked_features(self, params: dict[str, Tensor], tokens: Tensor) -> Tensor | None:
        """K heads at once: each head's one query reads the shared normed tokens (`single_query_pool`)."""
        query = params["query"].flatten(1)  # [K, D]
        q = stacked_query(params, "attn.", query, self.attn.num_heads)
        pooled = single_query_pool(
            q, params["attn.kv.weight"], params["attn.kv.bias"], tokens, params["norm1.weight"], params["norm1.bias"]
        )
        x = query[:, None] + stacked_linear(pooled, params["attn.proj.weight"], params["attn.proj.bias"])
        normed = stacked_layer_norm(x, params["norm2.weight"], params["norm2.bias"])
        return x + stacked_mlp(normed, params, "mlp.")
