"""Where a run's training curves go: `log.csv` always, TensorBoard event files on request.

One small interface, `RunLogger` (an epoch record in, `close` at the end), so another backend
(W&B, MLflow, ...) is one class and one entry in `LOGGERS`, as Lightning's loggers are. Only rank 0
logs; the training loop opens one logger set per run directory and hands every head's epochs to it.
"""

from __future__ import annotations

import csv
import importlib.util
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import TextIO

from stepcli.errors import StepcliError

LOG_CSV = "log.csv"
TENSORBOARD_DIR = "tensorboard"


@dataclass(frozen=True)
class EpochRecord:
    """One head's epoch: what a training curve plots."""

    head: int  # index of the head in its run (0 unless the run is a sweep)
    epoch: int
    train_loss: float
    train_top1: float
    val_loss: float
    val_top1: float
    val_mean_class_accuracy: float
    lr: float  # at the end of the epoch, as the optimizer holds it
    weight_decay: float
    epoch_time_s: float


class RunLogger:
    """A backend for a run's epochs."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)

    def log_epoch(self, record: EpochRecord) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release files; called once at the end of training."""


class CsvLogger(RunLogger):
    """`log.csv`: a header and one row per epoch per head, flushed as it goes (a killed run keeps its rows)."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(run_dir)
        self.handle: TextIO = (self.run_dir / LOG_CSV).open("w", newline="")
        self.writer = csv.writer(self.handle)
        self.writer.writerow([f.name for f in fields(EpochRecord)])
        self.handle.flush()

    def log_epoch(self, record: EpochRecord) -> None:
        self.writer.writerow(astuple(record))
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


class TensorBoardLogger(RunLogger):
    """TensorBoard event files in RUN/tensorboard (one sub-directory per head of a sweep): `tensorboard --logdir RUN`."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(run_dir)
        self.writers: dict[int, object] = {}

    def _writer(self, head: int):
        if head not in self.writers:
            # deferred: tensorboard is an optional extra, imported only by a run that asks for it
            from torch.utils.tensorboard import SummaryWriter

            self.writers[head] = SummaryWriter(str(self.run_dir / TENSORBOARD_DIR / f"head-{head}"))
        return self.writers[head]

    def log_epoch(self, record: EpochRecord) -> None:
        writer = self._writer(record.head)
        for name in ("train_loss", "train_top1", "val_loss", "val_top1", "val_mean_class_accuracy", "lr",
                     "weight_decay", "epoch_time_s"):  # fmt: skip
            writer.add_scalar(name.replace("_", "/", 1) if name.startswith(("train_", "val_")) else name,
                              getattr(record, name), record.epoch)  # fmt: skip

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


#: `--logger NAME`: the backends beside log.csv (always written)
LOGGERS: dict[str, type[RunLogger]] = {"csv": CsvLogger, "tensorboard": TensorBoardLogger}
#: the Python package each backend needs, and the extra that installs it
NEEDS = {"tensorboard": ("tensorboard", "stepcli[tensorboard]")}


def check_logger(name: str) -> None:
    """An unknown backend, or one whose package is not installed, before anything is trained."""
    if name not in LOGGERS:
        raise StepcliError(f"--logger {name!r} is not a logger; choose one of {', '.join(LOGGERS)}")
    if name in NEEDS and importlib.util.find_spec(NEEDS[name][0]) is None:
        package, extra = NEEDS[name]
        raise StepcliError(f"--logger {name} needs the {package} package: pip install '{extra}'")


class Loggers:
    """log.csv and the chosen backend of one run directory, as one logger."""

    def __init__(self, run_dir: Path, name: str) -> None:
        self.backends = [CsvLogger(run_dir)] + ([LOGGERS[name](run_dir)] if name != "csv" else [])

    def log_epoch(self, record: EpochRecord) -> None:
        for backend in self.backends:
            backend.log_epoch(record)

    def close(self) -> None:
        for backend in self.backends:
            backend.close()
