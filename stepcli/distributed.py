"""Rank and world size from the launchers people already use: torchrun, then Slurm."""

from __future__ import annotations

import os


def rank_and_world_size(rank: int | None = None, world_size: int | None = None) -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)``: explicit values, else torchrun's, else Slurm's, else (0, 1, 0)."""
    env = os.environ
    for r, w, lr in (("RANK", "WORLD_SIZE", "LOCAL_RANK"), ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")):
        if rank is None and r in env and w in env:
            return int(env[r]), int(env[w]), int(env.get(lr, 0))
    return (rank or 0), (world_size or 1), int(env.get("LOCAL_RANK", 0))
