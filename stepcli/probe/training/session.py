"""One process's share of a training run: its process group, the cache and its splits, whether
tokens are read from memory or streamed, and the helpers every epoch uses."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from stepcli.cache.reader import FeatureCache
from stepcli.distributed import Group, processes_per_node
from stepcli.probe.config import Runtime, TrainConfig
from stepcli.probe.data import Leakage, Splits, find_leakage, resolve_splits, subsample_train, use_memory
from stepcli.probe.evaluation.inference import evaluate_heads
from stepcli.probe.models import probe_class
from stepcli.probe.runs.rundir import LOG

log = logging.getLogger(__name__)


def reader_processes(device: torch.device) -> int:
    """HDF5 reader processes for a streamed cache: none when the probe trains on the CPU, whose
    cores the probe already uses (reading in-process is faster there), else two to keep the GPU fed."""
    return 0 if device.type == "cpu" else min(2, os.cpu_count() or 1)


@dataclass
class Session:
    """One process's share of a training run: its group, data, reading mode and output."""

    cfg: TrainConfig
    group: Group
    cache: FeatureCache
    splits: Splits
    runtime: Runtime
    #: each seed's train rows: seeds of one pass share val and test but draw their own
    #: --shots / --train-fraction subset (of one size)
    trains: dict[int, np.ndarray] = field(default_factory=dict)
    #: val/test clips that repeat a train clip's frames (of the whole train split, before --shots)
    leakage: Leakage = field(default_factory=Leakage)

    def split_of(self, seed: int) -> Splits:
        """The split a run of `seed` trained on."""
        return replace(self.splits, train=self.trains.get(seed, self.splits.train))

    def say(self, message: str) -> None:
        if self.group.main:
            log.info(message)

    def evaluate(self, probes: list[nn.Module], rows: np.ndarray, intervals: bool = False) -> list[dict]:
        return evaluate_heads(probes, self.cache, rows, device=self.group.device, workers=self.runtime.workers,
                              group=self.group, intervals=intervals)  # fmt: skip

    def write_log(self, out: Path, records: list[dict], mode: str = "a") -> None:
        if self.group.main:
            with (Path(out) / LOG).open(mode) as handle:
                handle.writelines(json.dumps(record) + "\n" for record in records)


def open_session(cfg: TrainConfig, group: Group, cache: FeatureCache | None, seeds: list[int]) -> Session:
    """Open the cache, resolve the splits (each seed's train subset) and whether to read from memory."""
    if cache is None or cache.path.resolve() != Path(cfg.cache).resolve() or cfg.layer not in (None, cache.layer):
        cache = FeatureCache(cfg.cache, layer=cfg.layer)
    probe_class(cfg.probe).check_layout(cache.layout)
    splits = resolve_splits(cache, cfg.seed)
    full_train = splits.train
    labels = cache.labels[splits.train]
    trains = {
        seed: subsample_train(splits.train, labels, cache.class_names, seed, cfg.shots, cfg.train_fraction)
        for seed in seeds
    }
    splits.train = trains[cfg.seed]
    in_memory = cache.in_memory or use_memory(cache, cfg.in_memory, copies=processes_per_node(group.world_size))
    if in_memory and not cache.in_memory:
        cache.load_into_memory()
    workers = 0 if in_memory else (reader_processes(group.device) if cfg.workers is None else cfg.workers)
    runtime = Runtime(group.device.type, in_memory, workers, group.world_size)
    leakage = find_leakage(cache, replace(splits, train=full_train))
    return Session(cfg, group, cache, splits, runtime, trains, leakage)
