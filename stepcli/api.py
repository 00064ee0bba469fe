"""The Python face of stepcli: one function per command, the same library code the CLI calls,
returning result objects (a `Run`, a `Comparison`, a `ShuffleResult`) instead of paths to parse.

Keyword options are the commands' own, under their config records' field names (`epochs`,
`lr`, `num_frames`, ...), with the same defaults; an unknown one is a `TypeError` naming it.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

from stepcli.cache.reader import FeatureCache
from stepcli.errors import StepcliError
from stepcli.extract.datasets import DATASETS, DatasetOptions
from stepcli.extract.encoders import FAMILIES
from stepcli.extract.pipeline import ExtractConfig, ExtractSummary, run_extract
from stepcli.probe.config import TrainConfig, default_batch_size
from stepcli.probe.evaluation.predict import PredictConfig, Prediction, predict_run
from stepcli.probe.models import PROBES
from stepcli.probe.runs.rundir import Run, load_run
from stepcli.probe.studies.compare import CompareConfig, Comparison, run_compare
from stepcli.probe.studies.cross_cache import EvaluateConfig, evaluate_run
from stepcli.probe.studies.results import ShuffleResult
from stepcli.probe.studies.seeds import train_seeds
from stepcli.probe.studies.shuffle import ShuffleConfig, run_shuffle_test
from stepcli.probe.training.loop import train_probe as train_run

#: what `extract`'s keyword options may name beside ExtractConfig's: the dataset adapter's options
_DATASET_FIELDS = {f.name for f in dataclasses.fields(DatasetOptions)} - {"num_frames", "extra"}


#: what a keyword of a config record's plain field type takes (int for float too, never a bool for a number)
_TAKES = {int: ("an integer", (int,)), float: ("a number", (int, float)), str: ("a string", (str,)),
          bool: ("True or False", (bool,))}  # fmt: skip


def _split(options: dict[str, Any], config: type, what: str) -> dict[str, Any]:
    """`options` checked against `config`'s fields: an unknown name is a TypeError naming it, a
    value of the wrong plain type (`epochs="x"`) a one-line StepcliError, not an error from deep inside."""
    known = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"{what}: unknown option {unknown[0]!r}; options: {', '.join(sorted(known))}")
    hints = typing.get_type_hints(config)
    for key, value in options.items():
        hint = hints[key]
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        plain = [a for a in args if a in _TAKES]
        if value is None and type(None) in args or not plain or len(plain) < len(set(args) - {type(None)}):
            continue  # None where allowed, or a field of a richer type: its record checks it
        wrong_bool = isinstance(value, bool) and bool not in plain
        if wrong_bool or not isinstance(value, tuple(t for a in plain for t in _TAKES[a][1])):
            want = " or ".join(_TAKES[a][0] for a in plain)
            raise StepcliError(f"{what}: {key}={value!r} is not {want}; give {want}")
    return options


def extract(dataset: str, out: Path | str, **options: Any) -> ExtractSummary:
    """Stage one: `dataset` through a frozen backbone into the cache `out` (rerun to resume).

    Dataset options (`root`, `size`, `split_file`, `view`, ...) and extraction options
    (`backbone`, `num_frames`, `layers`, `pool`, ...) are keywords alike."""
    given = {k: options.pop(k) for k in list(options) if k in _DATASET_FIELDS}
    given = {k: Path(v) if k in ("root", "annotations", "classes", "split_file", "pairs") and v else v
             for k, v in given.items()}  # fmt: skip
    cfg = ExtractConfig(dataset=dataset, out=Path(out), dataset_options=DatasetOptions(**given),
                        **_split(options, ExtractConfig, "extract"))  # fmt: skip
    return run_extract(cfg)


def _train_config(cache: Path | str, probe: str, out: Path | str, options: dict[str, Any]) -> TrainConfig:
    options = _split(options, TrainConfig, "train_probe")
    options.setdefault("batch_size", default_batch_size(options.get("device", TrainConfig.device)))
    return TrainConfig(cache=Path(cache), probe=probe, out=Path(out), **options)


def train_probe(
    cache: Path | str,
    probe: str,
    out: Path | str,
    *,
    sweep: dict[str, list] | None = None,
    seeds: list[int] | None = None,
    **options: Any,
) -> Run | list[Run]:
    """Train `probe` on the cache into the run directory `out`; the loaded `Run` (metrics, probe, config).

    `sweep` (`{"lr": [1e-3, 3e-3]}`) trains one head per combination and keeps the best on val;
    `seeds` trains one run per seed in OUT/seed-<s> and returns them all."""
    cfg = _train_config(cache, probe, out, options)
    if seeds is None:
        return train_run(cfg, sweep=sweep)
    train_seeds(cfg, list(seeds), sweep=sweep)
    return [load_run(Path(out) / f"seed-{s}") for s in seeds]


def compare(
    cache: Path | str,
    out: Path | str,
    probes: list[str] | tuple[str, ...] | None = None,
    *,
    sweep: dict[str, list] | None = None,
    seeds: list[int] | None = None,
    permutations: int = CompareConfig.permutations,
    seed: int = CompareConfig.seed,
    **train_options: Any,
) -> Comparison:
    """Every probe of `probes` (spec texts, e.g. `"step[cls=frame]"`) trained, shuffle-tested and
    tabulated in `out`, as `stepcli compare`; `train_options` go into every probe's TrainConfig."""
    train = _train_config(cache, "", out, {"seed": seed, **train_options})
    probes = [probes] if isinstance(probes, str) else probes  # one spec, not its letters
    cfg = CompareConfig(
        cache=Path(cache), out=Path(out), probes=tuple(probes or CompareConfig.probes), train=train,
        permutations=permutations, seed=seed, seeds=tuple(seeds or ()), sweep=dict(sweep or {}),
    )  # fmt: skip
    return run_compare(cfg)


def shuffle_test(
    run: Path | str | Run, cache: Path | str | None = None, out: Path | str | None = None, **options: Any
) -> ShuffleResult:
    """A run's test clips with frames in original, reversed and shuffled orders (results in OUT [RUN/shuffle])."""
    run_dir = run.run_dir if isinstance(run, Run) else Path(run)
    cfg = ShuffleConfig(**_split(options, ShuffleConfig, "shuffle_test"))
    result, _ = run_shuffle_test(run_dir, cache=None if cache is None else Path(cache),
                                 out=None if out is None else Path(out), cfg=cfg)  # fmt: skip
    return result


def evaluate(run: Path | str | Run, cache: Path | str, out: Path | str, **options: Any) -> dict:
    """A run scored on another cache of the same extraction; its metrics (as OUT/metrics.json holds them)."""
    run_dir = run.run_dir if isinstance(run, Run) else Path(run)
    paths = evaluate_run(run_dir, Path(cache), Path(out), EvaluateConfig(**_split(options, EvaluateConfig, "evaluate")))
    return json.loads(Path(paths["metrics"]).read_text())


def predict(run: Path | str | Run, videos: list[Path | str], **options: Any) -> list[Prediction]:
    """Top-k classes of new videos: the run's backbone re-encodes them, its probe classifies."""
    run_dir = run.run_dir if isinstance(run, Run) else Path(run)
    cfg = PredictConfig(**_split(options, PredictConfig, "predict"))
    return predict_run(run_dir, [Path(v) for v in videos], cfg)


__all__ = [
    "DATASETS", "FAMILIES", "PROBES", "Comparison", "ExtractSummary", "FeatureCache", "Prediction", "Run",
    "ShuffleResult", "compare", "evaluate", "extract", "load_run", "predict", "shuffle_test", "train_probe",
]  # fmt: skip
