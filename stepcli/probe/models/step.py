"""STEP: Self-attentive Temporal Embedding Probing (Thiyakesan Ponbagavathi & Roitberg, 2025).

Self-attention probing made order-aware by three changes, each a switch for the paper's ablations:

1. `temporal_pe`: a learnable encoding per frame, `[T, D]`, added to every token of frame t. Without
   it, attention over the frames' tokens is permutation-equivariant and no pooling can recover
   the order. (The paper's Figure 2 also speaks of "patch-wise" encodings; we read the abstract's
   "frame-wise positional encoding" as one vector per frame, shared by all its tokens.)
2. `cls`: "global" drops the per-frame prefix tokens (CLS, registers) and prepends one learned CLS
   token to all T*N patch tokens, classifying from its output; "frame" keeps each frame's CLS
   token (drops registers) and classifies from the mean of the T frame-CLS outputs; "mean" uses
   no CLS and mean-pools the patch-token outputs.
3. `block`: how each layer processes the `[B, L, D]` sequence.
   - "simplified" (default): `x + Attn(LN(x))`. Our reading of Figure 5 ("removal of non-linear
     components"): drop the feed-forward part (its GELU, and two thirds of a block's weights) and
     the LayerNorm that followed attention; what remains is linear apart from the attention
     softmax and one pre-norm, which the raw frozen tokens need (CLIP/DINOv2 tokens carry
     large-magnitude outlier channels). Attention keeps its output projection: q, k, v and proj
     are 4*D^2 weights against 12*D^2 for a standard block or for the attentive probe's
     cross-attention + MLP, which is exactly the "1/3 of the learnable parameters" the paper
     reports.
   - "no-ff": the standard block without its MLP: `LN(x + Attn(LN(x)))`.
   - "standard": the full pre-norm transformer block with MLP.

Then LayerNorm + Linear (the shared probe head) on the pooled output.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stepcli.cache.records import TokenLayout
from stepcli.errors import StepcliError
from stepcli.probe.models.base import Probe
from stepcli.probe.models.layers import (
    Attention,
    TransformerBlock,
    add_temporal_encoding,
    init_token,
    resolve_num_heads,
)
from stepcli.probe.models.registry import register
from stepcli.probe.models.stacked import (
    single_query_pool,
    stacked_layer_norm,
    stacked_linear,
    stacked_mlp,
    stacked_query,
)

CLS_MODES = ("global", "frame", "mean")


class SimplifiedBlock(nn.Module):
    """STEP's attention block on `[B, L, D]`: `x + Attn(LN(x))`, no feed-forward, no second norm."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, num_heads)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.attn(self.norm1(x))

    def forward_first(self, first: Tensor, others: Tensor) -> Tensor:
        """Row 0 of `forward([first; others])`, `[B, D]`: all a CLS readout after the last block needs."""
        return first + self.attn.forward_first(self.norm1(first), self.norm1(others))


class NoFeedForwardBlock(SimplifiedBlock):
    """A standard block with the MLP removed but its norm kept: `LN(x + Attn(LN(x)))`."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm2(super().forward(x))

    def forward_first(self, first: Tensor, others: Tensor) -> Tensor:
        return self.norm2(super().forward_first(first, others))


BLOCKS: dict[str, type[nn.Module]] = {
    "simplified": SimplifiedBlock,
    "no-ff": NoFeedForwardBlock,
    "standard": TransformerBlock,
}


@register("step", order_aware=True)
class StepProbe(Probe):
    """Temporal encoding + global CLS + simplified attention; see the module docstring."""

    choices = {"cls": CLS_MODES, "block": tuple(BLOCKS)}

    no_weight_decay_names = ("cls_token", "temporal_pe")
    ablations = (
        ("step", {}),
        ("step", {"temporal_pe": False}),
        ("step", {"cls": "frame"}),
        ("step", {"block": "standard"}),
        ("self-attention", {}),
    )

    @classmethod
    def reads_frame_cls(cls, options: dict) -> bool:
        return options.get("cls") == "frame"

    def __init__(
        self,
        layout: TokenLayout,
        num_classes: int,
        *,
        temporal_pe: bool = True,
        cls: str = "global",
        block: str = "simplified",
        depth: int = 1,
        num_heads: int | None = None,
    ) -> None:
        num_heads = resolve_num_heads(layout.dim, num_heads)
        options = dict(temporal_pe=temporal_pe, cls=cls, block=block, depth=depth, num_heads=num_heads)
        super().__init__(layout, num_classes, **options)
        if cls not in CLS_MODES:
            raise StepcliError(f"step probe: cls must be one of {', '.join(CLS_MODES)}, got {cls!r}")
        if block not in BLOCKS:
            raise StepcliError(f"step probe: block must be one of {', '.join(BLOCKS)}, got {block!r}")
        if cls == "frame" and layout.num_prefix < 1:
            raise StepcliError("step probe: cls='frame' needs per-frame CLS tokens (num_prefix >= 1)")
        if not isinstance(temporal_pe, bool) or depth < 1:
            raise StepcliError(f"step probe: need temporal_pe a bool and depth >= 1, got {temporal_pe!r}, {depth}")
        self.cls, self.block = cls, block
        self.temporal_pe = init_token(layout.num_frames, layout.dim) if temporal_pe else None
        self.cls_token = init_token(1, 1, layout.dim) if cls == "global" else None
        self.blocks = nn.Sequential(*(BLOCKS[block](layout.dim, num_heads) for _ in range(depth)))

    @property
    def order_aware(self) -> bool:
        """Without its temporal encoding, STEP's attention and every pooling are permutation-blind."""
        return self.temporal_pe is not None

    def _sequence(self, tokens: Tensor) -> tuple[Tensor, tuple[int, int, int, int]]:
        """The `[B, T*L, D]` tokens the blocks see (frame CLS or patches, plus the encoding), and `B, T, L, D`."""
        patches = tokens[:, :, self.layout.num_prefix :]
        x = torch.cat([tokens[:, :, :1], patches], dim=2) if self.cls == "frame" else patches
        x = add_temporal_encoding(x, self.temporal_pe)
        return x.flatten(1, 2), tuple(x.shape)

    def _through_all_but_last(self, cls: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """The global CLS `[B, 1, D]` and tokens `[B, S, D]` after every block but the last."""
        if len(self.blocks) > 1:
            x = self.blocks[:-1](torch.cat([cls, x], dim=1))
            cls, x = x[:, :1], x[:, 1:]
        return cls, x

    def frame_attention(self, tokens: Tensor) -> Tensor | None:
        """The global CLS token's attention mass per frame at the last block, averaged over heads."""
        if self.cls_token is None:
            return None
        self.check_tokens(tokens)
        x, (b, t, length, _) = self._sequence(tokens.to(self.dtype))
        cls, x = self._through_all_but_last(self.cls_token.expand(b, -1, -1), x)
        last = self.blocks[-1]
        weights = last.attn.first_weights(last.norm1(cls[:, 0]), last.norm1(x)).mean(dim=1)
        return weights[:, 1:].view(b, t, length).sum(dim=-1)

    def forward_features(self, tokens: Tensor) -> Tensor:
        """`[B, T, P+N, D]` -> `[B, T*L (+1), D]` through the blocks -> pooled `[B, D]`."""
        x, (b, t, length, d) = self._sequence(tokens)
        if self.cls_token is not None:  # only the CLS row of the last block is read: compute just that row
            cls, x = self._through_all_but_last(self.cls_token.expand(b, -1, -1), x)
            return self.blocks[-1].forward_first(cls[:, 0], x)
        x = self.blocks(x)
        if self.cls == "frame":
            return x.view(b, t, length, d)[:, :, 0].mean(dim=1)
        return x.mean(dim=1)

    def stacked_features(self, params: dict[str, Tensor], tokens: Tensor) -> Tensor | None:
        """K heads' global-CLS readout at once (`single_query_pool`): one block, whose one output
        row is all the head reads. Other layouts (frame CLS, mean pooling, depth > 1) have none."""
        if self.cls != "global" or len(self.blocks) != 1:
            return None
        block, prefix = self.blocks[0], "blocks.0."
        cls = params["cls_token"].flatten(1)  # [K, D]
        first = stacked_layer_norm(cls, params[f"{prefix}norm1.weight"], params[f"{prefix}norm1.bias"])
        query = stacked_query(params, f"{prefix}attn.", first, block.attn.num_heads)
        patches = tokens[..., self.layout.num_prefix :, :]
        pooled = single_query_pool(
            query, params[f"{prefix}attn.kv.weight"], params[f"{prefix}attn.kv.bias"], patches,
            params[f"{prefix}norm1.weight"], params[f"{prefix}norm1.bias"], params.get("temporal_pe"), first,
        )  # fmt: skip
        x = cls[:, None] + stacked_linear(
            pooled, params[f"{prefix}attn.proj.weight"], params[f"{prefix}attn.proj.bias"]
        )
        if self.block == "no-ff":
            return stacked_layer_norm(x, params[f"{prefix}norm2.weight"], params[f"{prefix}norm2.bias"])
        if self.block == "standard":
            normed = stacked_layer_norm(x, params[f"{prefix}norm2.weight"], params[f"{prefix}norm2.bias"])
            return x + stacked_mlp(normed, params, f"{prefix}mlp.")
        return x
