"""The `Probe` interface every probe implements, and the attention layers the probes share.

A probe maps cached frame tokens `[B, T, P+N, D]` (P prefix tokens: CLS and registers, N patch
tokens) to logits `[B, C]`. Each probe pools the tokens to one clip embedding `[B, D]` in
`forward_features`; the shared head (LayerNorm + Linear) turns that into logits, so probes differ
only in how they pool.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stepcli import StepcliError
from stepcli.cache.records import TokenLayout

if TYPE_CHECKING:
    from stepcli.cache.reader import FeatureCache


def resolve_num_heads(dim: int, num_heads: int | None) -> int:
    """12 heads (64-wide for ViT-B) when D allows it, else the largest divisor of D below 12."""
    if num_heads is None:
        return next(h for h in range(min(12, dim), 0, -1) if dim % h == 0)
    if num_heads < 1 or dim % num_heads:
        raise StepcliError(f"num_heads={num_heads} must be a positive divisor of the token width D={dim}")
    return num_heads


class Attention(nn.Module):
    """Multi-head attention: queries `x [B, L, D]` attend to `context [B, S, D]` (to `x` if None)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

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


class Mlp(nn.Module):
    """The transformer feed-forward part: `[B, L, D] -> [B, L, D]` through a GELU hidden layer."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Probe(nn.Module):
    """Base class: shape checks, the shared head, parameter counting and AdamW groups.

    Subclasses set `name`, list their learned tokens in `no_weight_decay_names`, pass their
    options to `super().__init__` (so `config()` can rebuild them) and implement
    `forward_features(tokens [B, T, P+N, D]) -> [B, D]`. A probe that is not trained by gradient
    descent (`logreg`) overrides `fit`; every probe is built, saved, loaded and counted alike.
    """

    name: str = ""
    no_weight_decay_names: tuple[str, ...] = ()
    #: False: the head is a plain Linear, for features that the probe already standardises
    head_norm: bool = True
    #: False: `fit` needs every training clip in one process, so torchrun cannot share the work
    distributed: bool = True
    #: True: the probe attends over patch tokens, so a `--tokens prefix` cache (N = 0) is refused
    needs_patches: bool = True

    def __init__(self, layout: TokenLayout, num_classes: int, **options: Any) -> None:
        super().__init__()
        if not isinstance(layout, TokenLayout):
            raise TypeError(f"probe '{self.name}': layout must be a TokenLayout, got {type(layout).__name__}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise StepcliError(f"probe '{self.name}': num_classes must be a positive integer, got {num_classes!r}")
        self.check_layout(layout)
        self.layout, self.num_classes = layout, num_classes
        self._options = dict(options)
        self.norm = nn.LayerNorm(layout.dim) if self.head_norm else nn.Identity()
        self.fc = nn.Linear(layout.dim, num_classes)

    @classmethod
    def check_layout(cls, layout: TokenLayout) -> None:
        """Refuse tokens this kind of probe cannot use, before anything is read or written."""
        if cls.needs_patches and layout.num_patches == 0:
            raise StepcliError(
                f"probe '{cls.name}' attends over patch tokens, but the cache holds only prefix tokens "
                "(--tokens prefix); use linear or logreg, or extract with --tokens all"
            )

    def config(self) -> dict[str, Any]:
        """The probe's own options (JSON-serialisable): `build_probe(name, layout, C, **config())`."""
        return dict(self._options)

    def fit(self, cache: FeatureCache, train: np.ndarray, val: np.ndarray, *, workers: int, seed: int) -> dict | None:
        """Fit in closed form on cache rows `train`, selecting on `val`; returns what to log.

        None (the default) means: train me with the gradient loop of `train-probe`.
        """
        return None

    def forward_features(self, tokens: Tensor) -> Tensor:
        """Pool `[B, T, P+N, D]` tokens to one clip embedding `[B, D]`."""
        raise NotImplementedError

    def check_tokens(self, tokens: Tensor) -> None:
        """A ValueError naming the expected shape when `tokens` are not `[B, T, P+N, D]` of this layout."""
        expected = self.layout.clip_shape
        if tokens.ndim != 4 or tuple(tokens.shape[1:]) != expected:
            raise ValueError(
                f"probe '{self.name}' expects tokens [B, T, P+N, D] = [B, {', '.join(map(str, expected))}],"
                f" got {list(tokens.shape)}"
            )

    def forward(self, tokens: Tensor) -> Tensor:
        """`tokens [B, T, P+N, D]` (any float dtype, e.g. float16 from the cache) -> logits `[B, C]`."""
        self.check_tokens(tokens)
        features = self.forward_features(tokens.to(self.fc.weight.dtype))
        return self.fc(self.norm(features))

    def num_params(self) -> int:
        """Trainable parameter count, the number the paper compares probes by."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def no_weight_decay(self) -> set[str]:
        """Names of parameters that weight decay would only harm: biases, norms, learned tokens."""
        return {name for name, p in self.named_parameters() if p.ndim <= 1 or name in self.no_weight_decay_names}

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW parameter groups: `weight_decay` for weight matrices, 0 for `no_weight_decay()`."""
        skip = self.no_weight_decay()
        params = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        groups = [
            {"params": [p for n, p in params if n not in skip], "weight_decay": weight_decay},
            {"params": [p for n, p in params if n in skip], "weight_decay": 0.0},
        ]
        return [g for g in groups if g["params"]]

    def optimizer(self, lr: float, weight_decay: float) -> torch.optim.AdamW:
        """AdamW over `param_groups`, fused: one kernel for all parameters instead of a loop per tensor
        (on CPU as on GPU), which matters when a probe step from the cache takes milliseconds."""
        return torch.optim.AdamW(self.param_groups(weight_decay), lr=lr, fused=True)


def init_token(*shape: int) -> nn.Parameter:
    """A learned token / embedding, initialised as in ViT and V-JEPA (truncated normal, std .02)."""
    return nn.Parameter(nn.init.trunc_normal_(torch.empty(*shape), std=0.02))
