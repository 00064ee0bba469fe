"""What decides a probe run: `TrainConfig` (the options of `train-probe`, each default written
here once) and `RunConfig`, the typed record of a finished run saved as config.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from stepcli.cache.records import DatasetRecord, ExtractionRecord, TokenLayout
from stepcli.device import resolve_device
from stepcli.errors import StepcliError

# where and how a run ran, not what it trained: two runs differing only in these are the same run
RUNTIME_FIELDS = ("out", "device", "in_memory", "workers", "compile", "logger")
#: `--batch-size` when none is given on a GPU: many small steps leave it idle, so it takes more clips each
GPU_BATCH_SIZE = 64


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a run, as the user gave it; saved in config.json.

    The defaults are sized for small datasets such as the demo: small batches buy optimizer
    steps, and the best-on-val checkpoint guards against too many epochs. On large datasets raise
    `batch_size` (and `lr` with it) and follow the protocol you compare against.
    """

    cache: Path
    probe: str
    out: Path
    epochs: int = 12
    lr: float = 1e-3
    weight_decay: float = 0.05
    batch_size: int = 8
    warmup_epochs: float = 1.0
    clip_grad: float = 1.0
    seed: int = 0
    device: str = "auto"
    shots: int | None = None
    train_fraction: float | None = None
    in_memory: str = "auto"
    workers: int | None = None  # HDF5 reader processes when streaming; None: one rule in `train.reader_processes`
    layer: int | None = None  # which of the cache's layers; None: its first (the one `extract --layer` named)
    probe_options: dict = field(default_factory=dict)
    compile: bool = False  # torch.compile the probe's forward; falls back to eager (with a warning) where it cannot
    logger: str = "csv"  # where training curves go beside log.csv (always written): `training.loggers.LOGGERS`

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}

    def training_differences(self, other: TrainConfig) -> list[str]:
        """`field: mine -> other's` for every field that changes what is trained: all of them but
        `RUNTIME_FIELDS` (and the cache, which runs compare by its resolved path)."""
        skip = {*RUNTIME_FIELDS, "cache", "probe_options"}
        diff = [
            f"{f.name}: {getattr(self, f.name)!r} -> {getattr(other, f.name)!r}"
            for f in fields(self)
            if f.name not in skip and getattr(self, f.name) != getattr(other, f.name)
        ]
        mine, theirs = self.probe_options, other.probe_options
        keys = sorted(k for k in {*mine, *theirs} if mine.get(k, "(unset)") != theirs.get(k, "(unset)"))
        return diff + [f"{k}: {mine.get(k, '(unset)')!r} -> {theirs.get(k, '(unset)')!r}" for k in keys]

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Also reads config.json of earlier versions, whose `train` held the resolved runtime too."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        if isinstance(kwargs.get("in_memory"), bool):
            kwargs["in_memory"] = "yes" if kwargs["in_memory"] else "no"
        for key in ("cache", "out"):
            kwargs[key] = Path(kwargs[key])
        return cls(**kwargs)


def default_batch_size(device: str) -> int:
    """`--batch-size` when none is given: `TrainConfig`'s on a CPU, `GPU_BATCH_SIZE` where `device`
    resolves to a GPU. The number is written into the run's config like a given one."""
    return GPU_BATCH_SIZE if resolve_device(device).type == "cuda" else TrainConfig.batch_size


@dataclass(frozen=True)
class Runtime:
    """How a run actually ran, resolved from `TrainConfig`'s `auto`s and the launcher."""

    device: str
    in_memory: bool
    workers: int
    world_size: int = 1


@dataclass(frozen=True)
class SplitRecord:
    """Where the train/val/test split came from and how many clips each holds."""

    source: str
    counts: dict[str, int]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class CacheRef:
    """What a run keeps of its cache: where it was and what made its tokens."""

    path: Path
    extraction: ExtractionRecord
    dataset: DatasetRecord


@dataclass(frozen=True)
class RunConfig:
    """config.json of a run: the probe, how it was trained, and the cache it was trained on."""

    probe: str
    layout: TokenLayout
    num_classes: int
    probe_options: dict
    train: TrainConfig
    runtime: Runtime
    cache: CacheRef
    splits: SplitRecord
    stepcli_version: str

    @property
    def class_names(self) -> list[str]:
        return list(self.cache.dataset.class_names)

    def to_dict(self) -> dict[str, Any]:
        return {
            "probe": self.probe,
            # the probe's constructor arguments, flat, as config.json has always held them
            "probe_config": {**self.layout.to_dict(), "num_classes": self.num_classes, **self.probe_options},
            "train": self.train.to_dict(),
            "runtime": asdict(self.runtime),
            "cache": {
                "path": str(self.cache.path),
                "extraction": self.cache.extraction.to_dict(),
                "dataset": self.cache.dataset.to_dict(),
            },
            "splits": {"source": self.splits.source, "notes": list(self.splits.notes), "counts": self.splits.counts},
            "stepcli_version": self.stepcli_version,
        }

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        """Raises KeyError/TypeError/StepcliError on a damaged file; `load_run` names the file."""
        options = dict(data["probe_config"])
        layout = TokenLayout(**{f.name: options.pop(f.name) for f in fields(TokenLayout)})
        num_classes = options.pop("num_classes")
        train = data["train"]
        runtime = data.get("runtime") or {k: train[k] for k in ("device", "in_memory", "workers", "world_size")}
        cache = data["cache"]
        splits = data["splits"]
        if not isinstance(splits, dict) or not isinstance(cache, dict):
            raise StepcliError("cache and splits must be JSON objects")
        return cls(
            probe=data["probe"],
            layout=layout,
            num_classes=num_classes,
            probe_options=options,
            train=TrainConfig.from_dict(train),
            runtime=Runtime(**runtime),
            cache=CacheRef(
                Path(cache["path"]),
                ExtractionRecord.from_dict(cache["extraction"]),
                DatasetRecord.from_dict(cache["dataset"]),
            ),
            splits=SplitRecord(splits["source"], dict(splits["counts"]), tuple(splits.get("notes", ()))),
            stepcli_version=data.get("stepcli_version", ""),
        )
