"""Attentive probe (V-JEPA style): one learnable query cross-attends to every token of the clip.

Cross-attention from a single query is a weighted sum over the keys, so permuting the frames
leaves the output unchanged: the probe is order-blind, unless `temporal_pe` adds a learned
encoding per frame (the order-aware control for STEP). `vjepa2` is V-JEPA 2's deeper preset.
"""

from __future__ import annotations

from torch import Tensor, nn

from stepcli.cache.records import TokenLayout
from stepcli.errors import StepcliError
from stepcli.probe.models.base import Probe
from stepcli.probe.models.layers import (
    Attention,
    Mlp,
    TransformerBlock,
    add_temporal_encoding,
    init_token,
    resolve_num_heads,
    temporal_encoding,
)
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
    """[depth-1 self-attention blocks ->] query + CrossAttn(query, LN(tokens)) -> + MLP(LN(.)) -> head.

    As in V-JEPA's `AttentivePooler`, the keys/values are the layer-normed tokens of all T frames
    `[B, T*(P+N), D]`, and the pooled query passes through a pre-norm residual MLP.
    """

    no_weight_decay_names = ("query", "temporal_pe")

    def __init__(
        self,
        layout: TokenLayout,
        num_classes: int,
        *,
        num_heads: int | None = None,
        mlp_ratio: float = 4.0,
        temporal_pe: bool = False,
        depth: int = 1,
        proj: bool = True,
    ) -> None:
        num_heads = resolve_num_heads(layout.dim, num_heads)
        options = dict(num_heads=num_heads, mlp_ratio=mlp_ratio, temporal_pe=temporal_pe, depth=depth, proj=proj)
        super().__init__(layout, num_classes, **options)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise StepcliError(f"{self.name} probe: depth must be an integer >= 1, got {depth!r}")
        dim = layout.dim
        self.query = init_token(1, 1, dim)
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, num_heads, proj=bool(proj))
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim, mlp_ratio)
        self.blocks = nn.Sequential(*(TransformerBlock(dim, num_heads, mlp_ratio) for _ in range(depth - 1)))
        self.temporal_pe = temporal_encoding(temporal_pe, layout.num_frames, dim)

    @property
    def order_aware(self) -> bool:
        return self.temporal_pe is not None

    def forward_features(self, tokens: Tensor) -> Tensor:
        """`[B, T, P+N, D]` -> `[B, D]`."""
        tokens = add_temporal_encoding(tokens, self.temporal_pe)
        context = self.norm1(self.blocks(tokens.flatten(1, 2)))
        x = self.query.expand(context.shape[0], -1, -1)
        x = x + self.attn(x, context)
        x = x + self.mlp(self.norm2(x))
        return x[:, 0]

    def stacked_features(self, params: dict[str, Tensor], tokens: Tensor) -> Tensor | None:
        """K heads at once: each head's one query reads the shared normed tokens (`single_query_pool`).
        Only the plain probe has this form: no blocks before the query, no temporal encoding, an
        output projection (so not `vjepa2`, nor the order-aware control)."""
        if len(self.blocks) or self.temporal_pe is not None or "attn.proj.weight" not in params:
            return None
        query = params["query"].flatten(1)  # [K, D]
        q = stacked_query(params, "attn.", query, self.attn.num_heads)
        pooled = single_query_pool(
            q, params["attn.kv.weight"], params["attn.kv.bias"], tokens, params["norm1.weight"], params["norm1.bias"]
        )
        x = query[:, None] + stacked_linear(pooled, params["attn.proj.weight"], params["attn.proj.bias"])
        normed = stacked_layer_norm(x, params["norm2.weight"], params["norm2.bias"])
        return x + stacked_mlp(normed, params, "mlp.")


@register("vjepa2", default=False, head_norm=False)
class VJepa2Probe(AttentiveProbe):
    """V-JEPA 2's attentive probe: 3 self-attention blocks over all tokens, then one cross-attention
    block from one learned query with no output projection, 16 heads, MLP ratio 4, a plain Linear head.

    The field's strongest order-blind probe: it has four blocks of weights to STEP's one third of one.
    Heads: 16 when D allows it, else the largest divisor of D below 16.
    """

    def __init__(
        self,
        layout: TokenLayout,
        num_classes: int,
        *,
        num_heads: int | None = None,
        mlp_ratio: float = 4.0,
        temporal_pe: bool = False,
        depth: int = 4,
        proj: bool = False,
    ) -> None:
        num_heads = resolve_num_heads(layout.dim, num_heads, preferred=16)
        super().__init__(
            layout, num_classes, num_heads=num_heads, mlp_ratio=mlp_ratio, temporal_pe=temporal_pe, depth=depth,
            proj=proj,
        )  # fmt: skip
