"""Linear probe: the standard image-to-video baseline, blind to frame order by construction."""

from __future__ import annotations

from torch import Tensor

from stepcli.cache.records import TokenLayout
from stepcli.errors import StepcliError
from stepcli.probe.models.base import Probe
from stepcli.probe.models.registry import register

POOLS = ("cls", "patch")


@register("linear", needs_patches=False)
class LinearProbe(Probe):
    """Mean over frames of the CLS token (or of all patch tokens) -> LayerNorm -> Linear.

    Args:
        pool: "cls" pools the first prefix token of each frame; "patch" pools the N patch tokens,
            for backbones whose CLS token is weak or missing (P = 0).
    """

    choices = {"pool": POOLS}

    def __init__(
        self,
        layout: TokenLayout,
        num_classes: int,
        *,
        pool: str = "cls",
    ) -> None:
        super().__init__(layout, num_classes, pool=pool)
        if pool not in POOLS:
            raise StepcliError(f"linear probe: pool must be one of {', '.join(POOLS)}, got {pool!r}")
        if pool == "cls" and layout.num_prefix < 1:
            raise StepcliError("linear probe: pool='cls' needs a CLS token (num_prefix >= 1); use pool='patch'")
        if pool == "patch" and layout.num_patches < 1:
            raise StepcliError("linear probe: pool='patch' needs patch tokens; this cache holds prefix tokens only")
        self.pool = pool

    def forward_features(self, tokens: Tensor) -> Tensor:
        """`[B, T, P+N, D]` -> `[B, D]`."""
        if self.pool == "cls":
            return tokens[:, :, 0].mean(dim=1)
        return tokens[:, :, self.layout.num_prefix :].mean(dim=(1, 2))
