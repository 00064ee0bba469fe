"""The token budget: how many of a frame's tokens are cached, chosen before extraction.

A ViT-B/14 frame is 257 tokens; most of a cache's bytes (and most of an all-token probe's time)
are patch tokens. `--pool 2x2` averages the patch grid over 2x2 windows before caching (a 7x7
grid becomes 4x4: windows at the edge average the patches they cover), so a frame keeps about a
quarter of its patches; `--tokens prefix` keeps only CLS and registers. Prefix tokens are always
kept as the backbone gave them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from stepcli.errors import StepcliError

TOKEN_SETS = ("all", "prefix")
_POOL = re.compile(r"^\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*$")


@dataclass(frozen=True)
class TokenBudget:
    """Patch-grid pooling window `(rows, cols)` and which tokens are kept (`all` or `prefix`)."""

    pool: tuple[int, int] = (1, 1)
    tokens: str = "all"

    @classmethod
    def parse(cls, pool: str = "1", tokens: str = "all") -> TokenBudget:
        """`--pool K` (a K x K window) or `RxC`, and `--tokens all|prefix`; bad values are one-line errors."""
        match = _POOL.match(str(pool))
        if not match or int(match.group(1)) < 1 or int(match.group(2) or match.group(1)) < 1:
            raise StepcliError(f"--pool {pool!r} is not K or RxC with positive integers (e.g. 2 or 2x2; 1: none)")
        if tokens not in TOKEN_SETS:
            raise StepcliError(f"--tokens {tokens!r}: choose one of {', '.join(TOKEN_SETS)}")
        rows = int(match.group(1))
        return cls((rows, int(match.group(2) or rows)), tokens)

    @property
    def pool_name(self) -> str:
        return f"{self.pool[0]}x{self.pool[1]}"

    def num_patches(self, grid: tuple[int, int]) -> int:
        """Patch tokens per frame after the budget, for a backbone's patch `grid`."""
        if self.tokens == "prefix":
            return 0
        return math.ceil(grid[0] / self.pool[0]) * math.ceil(grid[1] / self.pool[1])

    def apply(self, tokens: torch.Tensor, num_prefix: int, grid: tuple[int, int]) -> torch.Tensor:
        """`[B, P+N, D]` -> `[B, P+N', D]`: prefix tokens as they are, the patch grid pooled or dropped."""
        prefix, patches = tokens[:, :num_prefix], tokens[:, num_prefix:]
        if self.tokens == "prefix":
            return prefix
        if self.pool == (1, 1):
            return tokens
        b, n, d = patches.shape
        image = patches.transpose(1, 2).reshape(b, d, *grid)
        pooled = F.avg_pool2d(image, self.pool, ceil_mode=True)
        return torch.cat([prefix, pooled.flatten(2).transpose(1, 2)], dim=1)
