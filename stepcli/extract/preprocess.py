"""Frames to backbone input: resize, crop (centre, along the long side, or a given box), normalise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class Preprocess:
    """Resize the shorter side to ``size`` (bicubic, antialiased), centre-crop, normalise.

    The resize runs on the uint8 frames, as PIL's does in the CLIP and timm reference transforms
    (rounded and saturated to 0..255): torch's uint8 path is also much cheaper than the float one,
    which matters on a CPU, where preprocessing competes with the backbone for cores.
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, frames: np.ndarray, position: float = 0.5) -> torch.Tensor:
        """``[B, H, W, 3]`` uint8 -> ``[B, 3, size, size]`` float32.

        `position` places the square crop along the long side: 0 left (top), 0.5 centre, 1 right.
        """
        x = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.uint8)).permute(0, 3, 1, 2)  # channels-last
        h, w = x.shape[-2:]
        scale = self.size / min(h, w)
        new_h, new_w = max(self.size, round(h * scale)), max(self.size, round(w * scale))
        x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False)
        top, left = int((new_h - self.size) * position), int((new_w - self.size) * position)
        return self._normalize(x[..., top : top + self.size, left : left + self.size])

    def resized_crop(self, frames: np.ndarray, box: tuple[int, int, int, int]) -> torch.Tensor:
        """The `(top, left, height, width)` box of every frame resized to ``[B, 3, size, size]``:
        one random resized crop applied alike to all frames of a view."""
        top, left, height, width = box
        x = torch.from_numpy(np.ascontiguousarray(frames[:, top : top + height, left : left + width], dtype=np.uint8))
        x = F.interpolate(x.permute(0, 3, 1, 2), size=(self.size, self.size), mode="bicubic", antialias=True,
                          align_corners=False)  # fmt: skip
        return self._normalize(x)

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean).view(1, 3, 1, 1) * 255
        std = torch.tensor(self.std).view(1, 3, 1, 1) * 255
        return x.contiguous().float().sub_(mean).div_(std)  # NCHW uint8 first: the cheapest copy
