"""`stepcli compare`: train several probes on one cache, shuffle-test each, one table and plots.

Every probe trains on the same cached tokens, splits and seed, so the table compares like for
like. A probe whose run directory already holds a complete run with the same settings is reused,
so an interrupted comparison resumes where it stopped. The shuffle tests share one in-memory copy
of the cache when it fits in RAM.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from stepcli import StepcliError
from stepcli.cache.reader import FeatureCache
from stepcli.distributed import rank_and_world_size
from stepcli.probe import PROBES
from stepcli.probe.config import TrainConfig
from stepcli.probe.data import use_memory
from stepcli.probe.report import (
    plot_accuracy_vs_params,
    plot_confusion,
    plot_order_sensitivity,
    shuffle_markdown,
    write_tables,
)
from stepcli.probe.results import ComparisonRow
from stepcli.probe.run import CONFIG, Run, load_run, read_run_config
from stepcli.probe.seeds import mean_row, seed_dir
from stepcli.probe.shuffle import SHUFFLE_DIR, ShuffleConfig, pairs_for, shuffle_test, write_shuffle_outputs
from stepcli.probe.train import train_probe

log = logging.getLogger(__name__)
RUNS = "runs"
# train settings that must match for an existing run to be reused
REUSE_KEYS = ("probe", "epochs", "lr", "weight_decay", "batch_size", "warmup_epochs", "seed", "shots", "train_fraction",
              "layer")  # fmt: skip


@dataclass(frozen=True)
class CompareConfig:
    """The options of `compare`; training and shuffle defaults are those of train-probe and shuffle-test."""

    cache: Path
    out: Path
    probes: tuple[str, ...] = tuple(PROBES)
    epochs: int = TrainConfig.epochs
    lr: float = TrainConfig.lr
    batch_size: int = TrainConfig.batch_size
    permutations: int = ShuffleConfig.permutations
    seed: int = 0
    device: str = "auto"
    pairs_file: Path | None = None
    #: several seeds: one run per probe and seed in runs/<probe>/seed-<s>, the table shows mean ± std
    seeds: tuple[int, ...] = ()
    layer: int | None = None  # which of the cache's layers; None: its first


@dataclass
class Comparison:
    rows: list[ComparisonRow]
    tables: dict[str, Path]
    plots: dict[str, Path]
    markdown: str


def _train_config(cfg: CompareConfig, probe: str, seed: int | None = None) -> TrainConfig:
    """Without `seed` (no --seeds): the run of `cfg.seed` in runs/<probe>; else runs/<probe>/seed-<s>."""
    out = Path(cfg.out) / RUNS / probe
    out = out if seed is None else seed_dir(out, seed)
    return TrainConfig(cache=Path(cfg.cache), probe=probe, out=out, seed=cfg.seed if seed is None else seed,
                       device=cfg.device, epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                       layer=cfg.layer)  # fmt: skip


def _reusable(tcfg: TrainConfig, cache: FeatureCache) -> bool:
    """True when `tcfg.out` holds a finished run of the same probe, settings and cache."""
    if not (Path(tcfg.out) / CONFIG).is_file():
        return False  # not trained yet, or cut short: train it
    try:
        recorded = read_run_config(tcfg.out)
    except StepcliError as err:  # damaged: say so rather than train over it
        raise StepcliError(f"{err}; delete {tcfg.out} to train it again") from None
    same_cache = recorded.cache.path == cache.path.resolve()
    return same_cache and all(getattr(recorded.train, k) == getattr(tcfg, k) for k in REUSE_KEYS)


def check_compare_config(cfg: CompareConfig) -> None:
    unknown = [p for p in cfg.probes if p not in PROBES]
    if unknown or not cfg.probes:
        raise StepcliError(
            f"unknown probe(s) {', '.join(unknown) or '(none given)'}; valid probes: {', '.join(PROBES)}"
        )
    if len(set(cfg.probes)) != len(cfg.probes):
        raise StepcliError(f"--probes lists a probe twice: {','.join(cfg.probes)}")
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise StepcliError(f"--seeds lists a seed twice: {','.join(map(str, cfg.seeds))}")
    if cfg.permutations < 1:
        raise StepcliError(f"--permutations must be >= 1 for a comparison, got {cfg.permutations}")
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise StepcliError(f"--out {out} exists and is not a directory")
    world_size = rank_and_world_size()[1]
    if world_size > 1:  # every process would write the same tables and plots
        raise StepcliError(
            f"compare runs in one process, not {world_size}: train probes with `torchrun ... train-probe --out "
            "OUT/runs/<probe>` first (compare reuses finished runs), then run compare without torchrun"
        )


def _trained_run(cfg: CompareConfig, name: str, n: int, cache: FeatureCache, seed: int | None) -> Run:
    tcfg = _train_config(cfg, name, seed)
    which = f"[{n}/{len(cfg.probes)}] {name}" + ("" if seed is None else f" seed {seed}")
    if _reusable(tcfg, cache):
        log.info(f"{which}: reusing the finished run in {tcfg.out}")
        return load_run(tcfg.out)
    log.info(f"{which}: training")
    return train_probe(tcfg, cache)


def run_compare(cfg: CompareConfig) -> Comparison:
    """Train (or reuse), shuffle-test and tabulate every probe in `cfg.probes`."""
    check_compare_config(cfg)
    cache = FeatureCache(cfg.cache, layer=cfg.layer)
    pairs, source = pairs_for(cache, cfg.pairs_file)
    if use_memory(cache, "auto"):
        cache.load_into_memory()
    shuffle_cfg = ShuffleConfig(permutations=cfg.permutations, seed=cfg.seed, device=cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(cfg.seeds) or [None]
    per_seed: dict[str, list[ComparisonRow]] = {}
    results = {}
    for n, name in enumerate(cfg.probes, start=1):
        for seed in seeds:
            run = _trained_run(cfg, name, n, cache, seed)
            tick = time.monotonic()
            result = shuffle_test(run, cache, shuffle_cfg, pairs=pairs, pairs_source=source)
            shuffle_time = time.monotonic() - tick
            write_shuffle_outputs(result, run.run_dir / SHUFFLE_DIR)
            log.info(shuffle_markdown(result))
            row = ComparisonRow.of(result, run.run_dir, run.timing.get("train_time_s"), shuffle_time)
            per_seed.setdefault(name, []).append(row)
            results.setdefault(name, result)  # the first seed's confusion matrix stands for the probe
    spread = None
    if cfg.seeds:
        means = {name: mean_row(group, out / RUNS / name) for name, group in per_seed.items()}
        rows, spread = [m[0] for m in means.values()], {name: m[1] for name, m in means.items()}
    else:
        rows = [group[0] for group in per_seed.values()]
    best = max(rows, key=lambda r: (r.top1 or 0, r.pair_top1 or 0, -r.num_params))
    plots = {
        "accuracy_vs_params": plot_accuracy_vs_params(rows, out / "accuracy_vs_params.png", spread),
        "order_sensitivity": plot_order_sensitivity(rows, out / "order_sensitivity.png", spread),
        "confusion": plot_confusion(
            results[best.probe].confusion_matrix, cache.class_names, pairs,
            f"{best.probe} (best test top-1): confusion matrix on test", out / f"confusion_{best.probe}.png",
        ),
    }  # fmt: skip
    meta = {
        "cache": str(cache.path.resolve()), "probes": list(cfg.probes), "epochs": cfg.epochs,
        "permutations": cfg.permutations, "seed": cfg.seed, "pairs": [list(p) for p in pairs],
        "pairs_source": source, "best_probe": best.probe, "plots": {k: str(v) for k, v in plots.items()},
    }  # fmt: skip
    if cfg.seeds:
        meta |= {"seeds": list(cfg.seeds), "std": spread,
                 "per_seed": {name: [r.to_dict() for r in group] for name, group in per_seed.items()}}  # fmt: skip
    tables = write_tables(out, rows, meta, spread)
    return Comparison(rows=rows, tables=tables, plots=plots, markdown=tables["md"].read_text())


__all__ = ["CompareConfig", "Comparison", "ComparisonRow", "run_compare"]
