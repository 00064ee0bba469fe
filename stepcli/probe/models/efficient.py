"""Efficient probing, "EP" (Psomas et al., 2025): Q learned queries read the raw tokens.

Each query scores the raw tokens directly (no key projection, one head), and gathers its own
D/Q-wide chunk of one shared value projection; the Q chunks concatenate back to D. It costs a
value matrix and Q queries, about a twelfth of a transformer block. Every query's softmax is over
all T*(P+N) tokens, so the pooled clip ignores frame order.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from stepcli.cache.records import TokenLayout
from stepcli.errors import StepcliError
from stepcli.probe.models.base import Probe
from stepcli.probe.models.layers import init_token
from stepcli.probe.models.registry import register


class Standardize(nn.BatchNorm1d):
    """EP's non-affine BatchNorm before the linear head; a batch of one clip (a short last batch)
    is standardised with the running statistics, where a batch's own would be undefined."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim, affine=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] > 1:
            return super().forward(x)
        return F.batch_norm(x, self.running_mean, self.running_var, training=False, eps=self.eps)


QUERIES = 32  # efficient probing's default number of queries


@register("ep", default=False, head_norm=False)
class EfficientProbe(Probe):
    """softmax(queries . tokens^T / sqrt(D)) per query over its chunk of V(tokens) -> concat -> BN -> Linear."""

    no_weight_decay_names = ("queries",)

    def __init__(self, layout: TokenLayout, num_classes: int, *, num_queries: int | None = None) -> None:
        if num_queries is None:  # EP's 32 where D allows it, else the largest divisor of D below 32
            num_queries = next(q for q in range(min(QUERIES, layout.dim), 0, -1) if layout.dim % q == 0)
        super().__init__(layout, num_classes, num_queries=num_queries)
        if isinstance(num_queries, bool) or not isinstance(num_queries, int) or num_queries < 1:
            raise StepcliError(f"ep probe: num_queries must be a positive integer, got {num_queries!r}")
        if layout.dim % num_queries:
            raise StepcliError(f"ep probe: num_queries={num_queries} must divide the token width D={layout.dim}")
        self.queries = init_token(num_queries, layout.dim)
        self.v = nn.Linear(layout.dim, layout.dim, bias=False)
        self.norm = Standardize(layout.dim)

    def forward_features(self, tokens: Tensor) -> Tensor:
        """`[B, T, P+N, D]` -> `[B, Q, T*(P+N)]` attention -> `[B, Q, D/Q]` chunks -> `[B, D]`."""
        x = tokens.flatten(1, 2)
        (b, s, d), q = x.shape, self.queries.shape[0]
        weights = (x @ self.queries.T * d**-0.5).transpose(1, 2).softmax(dim=-1)
        values = self.v(x).view(b, s, q, d // q).transpose(1, 2)
        return (weights[..., None, :] @ values).reshape(b, d)
