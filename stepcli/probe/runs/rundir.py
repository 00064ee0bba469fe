"""A run directory: what `train-probe` leaves behind, and loading it back without executing code.

    config.json        resolved training config, probe name and config, the cache's provenance
    model.safetensors  probe weights (safetensors: tensors only, nothing to unpickle)
    metrics.json       test metrics at the top level, `val` beside them; deterministic on CPU
    timing.json        wall-clock times, kept apart so that metrics.json compares byte for byte
    splits.json        clip ids of train/val/test, so later evaluations use the same clips, and
                       under `groups` each clip's group (what no split may cut apart)
    log.jsonl          one line per epoch (written by the training loop as it goes)
    log.csv            one row per epoch per head (train loss, val top-1, lr, weight decay, time)
    tensorboard/       event files, one directory per head, with `--logger tensorboard`

A run is only meaningful on tokens from the extraction it was trained on; `load_run(run, cache)`
(or `Run.check_cache`) refuses any other cache and names the difference.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from stepcli.cache.format import MANIFEST, Manifest
from stepcli.cache.reader import FeatureCache
from stepcli.errors import StepcliError
from stepcli.files import write_atomic
from stepcli.probe.config import CacheRef, RunConfig
from stepcli.probe.models import Probe, build_probe
from stepcli.probe.runs.compat import CLASSES_SAME, check_run_cache

GROUPS = "groups"  # splits.json's key of each split's clip groups

CONFIG, MODEL, METRICS, TIMING, SPLIT_IDS, LOG = (
    "config.json",
    "model.safetensors",
    "metrics.json",
    "timing.json",
    "splits.json",
    "log.jsonl",
)


@dataclass
class Run:
    """A loaded run: its probe (in eval mode), typed config, metrics, timings and split clip ids."""

    run_dir: Path
    probe: Probe
    config: RunConfig
    metrics: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)
    split_ids: dict[str, list[str]] = field(default_factory=dict)
    #: each split's clip groups in the order of `split_ids` (empty for runs saved before they were)
    split_groups: dict[str, list[str]] = field(default_factory=dict)

    @property
    def cache_path(self) -> Path:
        return self.config.cache.path

    @property
    def class_names(self) -> list[str]:
        return self.config.class_names

    @property
    def layer(self) -> int:
        """The cache layer the probe was trained on."""
        layer = self.config.train.layer
        return self.config.cache.extraction.layer if layer is None else layer

    def rows(self, cache: FeatureCache, split: str = "test") -> np.ndarray:
        """Rows of `cache` holding this run's `split` clips (the split it was trained with)."""
        index = {clip_id: r for r, clip_id in enumerate(cache.clip_ids)}
        ids = self.split_ids.get(split, [])
        missing = [i for i in ids if i not in index]
        if missing:
            raise StepcliError(
                f"cache {cache.path} lacks {len(missing)} of run {self.run_dir}'s {split} clips (e.g. {missing[0]!r})"
            )
        return np.asarray([index[i] for i in ids], dtype=np.int64)

    def open_cache(self, cache: FeatureCache | Path | str | None = None) -> FeatureCache:
        """`cache`, or the cache the run was trained on (which may have moved since), reading the layer
        the probe was trained on."""
        if isinstance(cache, FeatureCache):
            return cache
        if cache is None and not (self.cache_path / MANIFEST).is_file():
            raise StepcliError(
                f"run {self.run_dir} was trained on the cache {self.cache_path}, which is not there any more; "
                "pass --cache with where it is now"
            )
        path = self.cache_path if cache is None else Path(cache)
        held = Manifest.load(path).extraction.layers
        if self.layer not in held:  # the reader's own message offers a choice the run does not have
            raise StepcliError(
                f"run {self.run_dir} was trained on layer {self.layer}; cache {path} holds layer(s) "
                f"{','.join(map(str, held))}: use a cache extracted with --layers including {self.layer}"
            )
        return FeatureCache(path, layer=self.layer)

    def check_cache(self, cache: FeatureCache, classes: str = CLASSES_SAME) -> None:
        """Refuse a cache whose tokens differ in provenance (backbone, weights, layer, size, T, layout)
        or whose classes the run does not know; `classes` as in `compat.run_cache_differences`."""
        check_run_cache(self.run_dir, self.config, self.layer, cache, classes)


def cache_ref(cache: FeatureCache) -> CacheRef:
    """What config.json keeps of the cache: where it is and the provenance of its tokens."""
    return CacheRef(cache.path.resolve(), cache.manifest.extraction, cache.manifest.dataset)


def _dump(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def save_run(
    run_dir: Path | str,
    *,
    probe: Probe,
    config: RunConfig,
    metrics: dict,
    timing: dict,
    split_ids: dict[str, list[str]],
    split_groups: dict[str, list[str]] | None = None,
) -> None:
    """Write a run's files, each via a temporary name so that a killed process leaves no half file."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in probe.state_dict().items()}
    tmp = run_dir / f".{MODEL}.tmp"
    save_file(state, str(tmp), metadata={"probe": probe.name})
    os.replace(tmp, run_dir / MODEL)
    write_atomic(run_dir / SPLIT_IDS, _dump({**split_ids, **({GROUPS: split_groups} if split_groups else {})}))
    write_atomic(run_dir / TIMING, _dump(timing))
    write_atomic(run_dir / METRICS, _dump(metrics))
    write_atomic(run_dir / CONFIG, _dump(config.to_dict()))  # last: a run with config.json is complete


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise StepcliError(f"{path.parent} is not a complete stepcli run (no {path.name}); {what}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StepcliError(f"{path} is not valid JSON ({err}); the run is damaged") from None


def read_run_config(run_dir: Path | str) -> RunConfig:
    """config.json of a run as a typed record; a damaged or foreign file is a one-line error."""
    path = Path(run_dir) / CONFIG
    data = _read_json(path, "train it with `stepcli train-probe`")
    try:
        config = RunConfig.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError, StepcliError) as err:
        reason = repr(err).splitlines()[0]
        raise StepcliError(f"{path} does not describe a run ({reason}); the run is damaged") from None
    # the probe was built for its cache's tokens: a config whose two halves disagree was edited
    cache_layout = config.cache.extraction.layout
    if config.layout != cache_layout or config.num_classes != len(config.class_names):
        raise StepcliError(
            f"{path} is inconsistent (probe built for {config.layout.clip_shape} tokens and {config.num_classes} "
            f"classes, its cache holds {cache_layout.clip_shape} tokens and {len(config.class_names)} classes); "
            "the run is damaged"
        )
    return config


def load_run(run_dir: Path | str, cache: FeatureCache | Path | str | None = None) -> Run:
    """Load a run (probe in eval mode); with `cache`, also check the cache matches the run's tokens."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    try:
        probe = build_probe(config.probe, config.layout, config.num_classes, **config.probe_options)
    except (TypeError, ValueError, RuntimeError, StepcliError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise StepcliError(f"{run_dir / CONFIG} does not describe a probe ({reason}); the run is damaged") from None
    try:
        state = load_file(str(run_dir / MODEL))
    except Exception as err:  # safetensors raises its own error type for truncated or garbled files
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise StepcliError(f"{run_dir / MODEL} is missing or corrupt ({reason}); retrain the probe") from None
    try:
        probe.load_state_dict(state, strict=True)
    except RuntimeError:
        raise StepcliError(
            f"{run_dir / MODEL} does not hold the weights of the probe in {CONFIG} ({config.probe}); retrain the probe"
        ) from None
    optional = {name: run_dir / name for name in (METRICS, TIMING, SPLIT_IDS)}
    loaded = {k: (_read_json(p, "") if p.is_file() else {}) for k, p in optional.items()}
    run = Run(
        run_dir=run_dir,
        probe=probe.eval().to(torch.float32),
        config=config,
        metrics=loaded[METRICS],
        timing=loaded[TIMING],
        split_ids={k: v for k, v in loaded[SPLIT_IDS].items() if k != GROUPS},
        split_groups=loaded[SPLIT_IDS].get(GROUPS, {}),
    )
    if cache is not None:
        run.check_cache(cache if isinstance(cache, FeatureCache) else run.open_cache(cache))
    return run
