"""The shuffle test's result as typed records, round-tripping through results.json.

`compare`, the report and the plots read these fields instead of unpacking nested dicts, and
results.json keeps the layout it has always had (header, ``summary``, ``per_order``,
``per_class``, ``confusion_matrix``).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from stepcli.pairs import Pair

ORIGINAL, REVERSED, SHUFFLED = "original", "reversed", "shuffled"

Value = float | None


@dataclass(frozen=True)
class OrderMetrics:
    """Accuracy of one frame order, and how often its predictions differ from the original order's."""

    top1: Value
    mean_class_accuracy: Value
    flip_rate: Value
    pair_top1: Value  # over clips of nearly-symmetric pairs
    pair_partner_rate: Value  # share of those predicted as the partner class
    pair_direction: Value  # share where the own class beats every partner
    top5: Value = None  # only with more than 5 classes


METRIC_KEYS = tuple(f.name for f in fields(OrderMetrics))


@dataclass(frozen=True)
class Spread:
    """One metric over the K shuffled orders."""

    mean: Value
    std: Value
    min: Value
    max: Value


@dataclass(frozen=True)
class ShuffledMetrics:
    """`OrderMetrics` over the K random permutations, each as a `Spread`."""

    top1: Spread
    mean_class_accuracy: Spread
    flip_rate: Spread
    pair_top1: Spread
    pair_partner_rate: Spread
    pair_direction: Spread
    top5: Spread = Spread(None, None, None, None)


@dataclass(frozen=True)
class OrderResult:
    order: str  # original, reversed or shuffle-01 ...
    frames: tuple[int, ...]
    metrics: OrderMetrics

    def to_dict(self) -> dict[str, Any]:
        return {"order": self.order, "frames": list(self.frames), **asdict(self.metrics)}

    @classmethod
    def from_dict(cls, data: dict) -> OrderResult:
        return cls(data["order"], tuple(data["frames"]), OrderMetrics(**{k: data.get(k) for k in METRIC_KEYS}))


@dataclass(frozen=True)
class ClassChange:
    """One class's accuracy per frame order and how it changed against the original order."""

    num_clips: int
    in_pair: bool
    original: Value
    reversed: Value
    shuffled: Value
    change_reversed: Value
    change_shuffled: Value


@dataclass(frozen=True)
class ShuffleResult:
    """Everything `shuffle-test` reports for one run."""

    run: str
    probe: str
    num_params: int
    cache: str
    num_clips: int
    num_frames: int
    permutations: int
    seed: int
    pairs: tuple[Pair, ...]
    pairs_source: str
    class_names: tuple[str, ...]
    original: OrderMetrics
    reversed: OrderMetrics
    shuffled: ShuffledMetrics
    per_order: tuple[OrderResult, ...]
    per_class: dict[str, ClassChange]
    confusion_matrix: list[list[int]]
    #: 95% bootstrap intervals over the test clips per order (shuffled: each clip's mean over the K orders)
    intervals: dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run, "probe": self.probe, "num_params": self.num_params, "cache": self.cache,
            "num_clips": self.num_clips, "num_frames": self.num_frames, "permutations": self.permutations,
            "seed": self.seed, "pairs": [list(p) for p in self.pairs], "pairs_source": self.pairs_source,
            "class_names": list(self.class_names),
            "summary": {ORIGINAL: asdict(self.original), REVERSED: asdict(self.reversed),
                        SHUFFLED: asdict(self.shuffled)},
            "per_order": [o.to_dict() for o in self.per_order],
            "per_class": {name: asdict(c) for name, c in self.per_class.items()},
            "confusion_matrix": self.confusion_matrix, "intervals": self.intervals,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict) -> ShuffleResult:
        summary = data["summary"]
        header = {f.name: data[f.name] for f in fields(cls) if f.name in data and f.name not in _TYPED}
        return cls(
            **header,
            pairs=tuple(tuple(p) for p in data["pairs"]),
            class_names=tuple(data["class_names"]),
            original=OrderMetrics(**summary[ORIGINAL]),
            reversed=OrderMetrics(**summary[REVERSED]),
            shuffled=ShuffledMetrics(**{k: Spread(**v) for k, v in summary[SHUFFLED].items()}),
            per_order=tuple(OrderResult.from_dict(o) for o in data["per_order"]),
            per_class={name: ClassChange(**c) for name, c in data["per_class"].items()},
        )


@dataclass(frozen=True)
class ComparisonRow:
    """One probe's line of the comparison table (fractions and seconds). comparison.json keeps its
    results raw (`result_dict`), its wall-clock times go to timing.json (`timing_dict`)."""

    probe: str
    num_params: int
    top1: float | None
    mean_class_accuracy: float | None
    pair_top1: float | None
    shuffled_top1: float | None
    shuffled_pair_top1: float | None
    reversed_top1: float | None
    reversed_pair_top1: float | None
    reversed_pair_partner_rate: float | None
    flip_rate: float | None
    reversed_flip_rate: float | None
    train_time_s: float | None
    shuffle_time_s: float
    run: str
    top5: float | None = None
    top1_ci: tuple[float | None, float | None] | None = None
    #: `compare --sweep`: the swept values of the head selected on val (None: not tuned)
    selected: str | None = None
    #: val top-1 of the run (what `compare --layers` selects a layer by; never test)
    val_top1: float | None = None
    #: val and test clips that repeat a train clip's frames (None: none, the column is not shown)
    leaked: int | None = None

    @classmethod
    def of(
        cls, result: ShuffleResult, run_dir: Path | str, train_time: float | None, shuffle_time: float
    ) -> ComparisonRow:
        original, reverse, shuffled = result.original, result.reversed, result.shuffled
        return cls(
            probe=result.probe, num_params=result.num_params, top1=original.top1,
            mean_class_accuracy=original.mean_class_accuracy, pair_top1=original.pair_top1,
            shuffled_top1=shuffled.top1.mean, shuffled_pair_top1=shuffled.pair_top1.mean,
            reversed_top1=reverse.top1, reversed_pair_top1=reverse.pair_top1,
            reversed_pair_partner_rate=reverse.pair_partner_rate, flip_rate=shuffled.flip_rate.mean,
            reversed_flip_rate=reverse.flip_rate, train_time_s=train_time, shuffle_time_s=round(shuffle_time, 3),
            run=str(run_dir), top5=original.top5,
            top1_ci=tuple(result.intervals[ORIGINAL]["top1"]) if ORIGINAL in result.intervals else None,
        )  # fmt: skip

    def to_dict(self) -> dict:
        return asdict(self)

    def result_dict(self, study: Path | str) -> dict:
        """The row as comparison.json holds it: no wall-clock times and its run relative to the study
        directory, so that a rerun of the study into another --out writes the same bytes."""
        data = {k: v for k, v in asdict(self).items() if k not in TIME_KEYS}
        data["run"] = study_relative(self.run, study)
        return data

    def timing_dict(self) -> dict[str, float | None]:
        return {k: getattr(self, k) for k in TIME_KEYS}


#: a comparison row's wall-clock fields: in timing.json beside comparison.json, never in it
TIME_KEYS = ("train_time_s", "shuffle_time_s")


def study_relative(path: Path | str, study: Path | str) -> str:
    """`path` relative to the study directory it lies in (as written), else absolute."""
    path, study = Path(os.path.abspath(path)), Path(os.path.abspath(study))
    return path.relative_to(study).as_posix() if path.is_relative_to(study) else str(path)


def row_run(study: Path | str, row: dict) -> Path:
    """The run directory of a comparison.json row: relative to the study (older files: absolute)."""
    return Path(study) / row["run"]


_TYPED = {"pairs", "class_names", "original", "reversed", "shuffled", "per_order", "per_class"}


@dataclass(frozen=True)
class FrameDrop:
    """One probe's test accuracy with every frame intact, and with frame t replaced, for each t."""

    probe: str
    run: str
    top1: float | None
    pair_top1: float | None
    replaced_top1: tuple[float | None, ...]
    replaced_pair_top1: tuple[float | None, ...]


@dataclass(frozen=True)
class FrameAttention:
    """Mean attention mass of a probe's readout token on each frame, per test class `[C][T]`."""

    probe: str
    class_names: tuple[str, ...]
    mass: tuple[tuple[float | None, ...], ...]
