"""Sweeps of heads in one pass: every combination of swept values is an independent head.

`train-probe --sweep lr=3e-4,1e-3 --sweep weight_decay=0.01,0.05` trains four heads on the same
batches (each batch read, moved and cast once for all of them), each with its own seeded
initialisation, optimizer and schedule; heads of the same probe options train as one stacked
model (`stacked`), which costs about what a few runs do. The head with the best validation accuracy is selected
(ties: lower validation loss, then the earlier head) and its run is written as an ordinary run;
sweep.json keeps every head's best validation and test numbers, so nobody needs to select on test.
Only what leaves the batches alone can be swept: the optimizer's settings and the probe's options.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from stepcli.errors import StepcliError
from stepcli.files import write_atomic
from stepcli.probe.config import TrainConfig
from stepcli.probe.models import probe_class, probe_options

SWEEP = "sweep.json"
#: TrainConfig fields a head may have its own value of; the rest (batches, epochs, seed) are shared
TRAIN_KEYS = ("lr", "weight_decay", "warmup_epochs", "clip_grad")
SELECTION = "best val top-1, ties: lower val loss, then the earlier head"


def check_sweep(probe: str, sweep: dict[str, list], given_options: dict) -> None:
    """One-line errors for a sweep that cannot be run; `given_options` are the fixed probe options."""
    if not sweep:
        return
    if probe_class(probe).capabilities.fitted:
        raise StepcliError(f"--sweep needs a gradient-trained probe; '{probe}' is fitted in closed form")
    valid = [*TRAIN_KEYS, *probe_options(probe)]
    for key, values in sweep.items():
        if key not in valid:
            raise StepcliError(
                f"--sweep {key}: every head trains on the same batches, so only these can be swept for "
                f"probe '{probe}': {', '.join(valid)}"
            )
        if not values:
            raise StepcliError(f"--sweep {key}= lists no values; give KEY=V1,V2,...")
        if len(set(map(repr, values))) != len(values):
            raise StepcliError(f"--sweep {key} lists a value twice: {values}")
    twice = sorted(set(sweep) & set(given_options))
    if twice:
        raise StepcliError(f"{', '.join(twice)} is both swept and fixed; give it once")


def head_configs(cfg: TrainConfig, sweep: dict[str, list]) -> list[tuple[dict, TrainConfig]]:
    """`(swept values, config)` of every head: the product of the swept values, in the order given."""
    keys = list(sweep)
    heads = []
    for values in itertools.product(*(sweep[k] for k in keys)):
        chosen = dict(zip(keys, values, strict=True))
        train = {k: v for k, v in chosen.items() if k in TRAIN_KEYS}
        options = {**cfg.probe_options, **{k: v for k, v in chosen.items() if k not in TRAIN_KEYS}}
        heads.append((chosen, replace(cfg, **train, probe_options=options)))
    return heads


def _brief(metrics: dict) -> dict:
    keep = ("num_clips", "top1", "top5", "mean_class_accuracy", "loss", "ci95")
    return {k: metrics[k] for k in keep if k in metrics}


@dataclass(frozen=True)
class SweepHead:
    """One head of a sweep: its swept values, best epoch, and val/test numbers at that epoch."""

    values: dict
    best_epoch: int
    val: dict
    test: dict
    log: list = field(default_factory=list)

    @classmethod
    def of(cls, values: dict, best_epoch: int, val: dict, test: dict, log: list) -> SweepHead:
        return cls(dict(values), best_epoch, _brief(val), _brief(test), list(log))


@dataclass(frozen=True)
class SweepRecord:
    """sweep.json: every head, which one was selected and how."""

    swept: dict
    heads: tuple[SweepHead, ...]
    selected: int
    selection: str = SELECTION

    def to_dict(self) -> dict[str, Any]:
        return {"swept": self.swept, "selection": self.selection, "selected": self.selected,
                "heads": [asdict(h) for h in self.heads]}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict) -> SweepRecord:
        heads = tuple(SweepHead(**h) for h in data["heads"])
        return cls(dict(data["swept"]), heads, int(data["selected"]), data.get("selection", SELECTION))

    def save(self, run_dir: Path) -> Path:
        path = Path(run_dir) / SWEEP
        write_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, run_dir: Path) -> SweepRecord:
        return cls.from_dict(json.loads((Path(run_dir) / SWEEP).read_text()))


def select_head(vals: list[dict]) -> int:
    """Index of the head with the best val top-1; ties: lower val loss, then the earlier head."""
    keys = [(v["top1"] or 0.0, -(v["loss"] if v["loss"] is not None else float("inf"))) for v in vals]
    return max(range(len(keys)), key=lambda i: (keys[i], -i))
