"""One rule for ``--device auto|cpu|cuda`` in every command."""

from __future__ import annotations

import torch

from stepcli.errors import StepcliError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``auto`` takes the GPU when there is one; under torchrun each local rank gets its own GPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in DEVICES:
        raise StepcliError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise StepcliError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")
