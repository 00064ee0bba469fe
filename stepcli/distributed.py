"""Rank and world size from the launchers people already use: torchrun, then Slurm.

Training across processes needs a process group as well; `process_group` opens one from the same
environment (``env://``: MASTER_ADDR/MASTER_PORT) and closes it again, and `Group` carries the
few collectives probe training uses. Nothing here launches processes: torchrun or srun do that.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from stepcli.errors import StepcliError


def rank_and_world_size(rank: int | None = None, world_size: int | None = None) -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)``: explicit values, else torchrun's, else Slurm's, else (0, 1, 0)."""
    env = os.environ
    for r, w, lr in (("RANK", "WORLD_SIZE", "LOCAL_RANK"), ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")):
        if rank is None and r in env and w in env:
            return int(env[r]), int(env[w]), int(env.get(lr, 0))
    return (rank or 0), (world_size or 1), int(env.get("LOCAL_RANK", 0))


def processes_per_node(world_size: int) -> int:
    """How many processes share this machine's RAM: torchrun says so; otherwise assume all of them."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", world_size))


@dataclass(frozen=True)
class Group:
    """This process's place among `world_size` training processes, and the collectives on `device`."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """Rank 0 alone prints and writes outputs."""
        return self.rank == 0

    def sum(self, values: list[float]) -> list[float]:
        """`values` summed over all processes (float64, so counts stay exact)."""
        if self.world_size == 1:
            return list(values)
        total = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return total.tolist()

    def gather_rows(self, mine: torch.Tensor, total: int) -> torch.Tensor:
        """Undo ``rows[rank::world_size]``: every process gets all `total` rows back in their order."""
        if self.world_size == 1:
            return mine
        share = -(-total // self.world_size)  # rank r holds rows r, r + W, ...; at most `share` of them
        padded = mine.new_zeros((share, *mine.shape[1:]))
        padded[: len(mine)] = mine
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        # row j * W + r is rank r's j-th: interleave the ranks, then drop the padding at the end
        return torch.stack(parts, 1).reshape(share * self.world_size, *mine.shape[1:])[:total]


@contextmanager
def process_group(device: torch.device) -> Iterator[Group]:
    """A `Group` for this process: world size 1 without a launcher, else an ``env://`` process group
    (nccl on CUDA, gloo on CPU) that is destroyed on the way out, also after an error."""
    if dist.is_initialized():  # a caller that set up its own group keeps it
        yield Group(dist.get_rank(), dist.get_world_size(), device)
        return
    rank, world_size, _ = rank_and_world_size()
    if world_size == 1:
        yield Group(0, 1, device)
        return
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise StepcliError(
            f"{world_size} processes (rank {rank}) but no {' or '.join(missing)} in the environment: launch with torchrun, "
            "or export MASTER_ADDR/MASTER_PORT for srun (see the README)"
        )
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world_size)
    try:
        yield Group(rank, world_size, device)
    except RuntimeError as err:  # gloo and nccl say a lost peer as a RuntimeError (DistError)
        if not _peer_lost(err):
            raise
        reason = " ".join(str(err).split())[:200]
        raise StepcliError(
            f"rank {rank}: another of the {world_size} training processes stopped ({reason}); its own output says "
            "why, and torchrun stops the rest: rerun the same command"
        ) from None
    finally:
        dist.destroy_process_group()


def _peer_lost(err: RuntimeError) -> bool:
    words = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "NCCL", "gloo")
    return isinstance(err, dist.DistError) or any(w in str(err) for w in words)
