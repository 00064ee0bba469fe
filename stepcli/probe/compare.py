"""`stepcli compare`: train several probes on one cache, shuffle-test each, one table and plots.

Every probe trains on the same cached tokens, splits and seed, so the table compares like for
like. A probe whose run directory already holds a complete run with the same settings is reused,
so an interrupted comparison resumes where it stopped. The shuffle tests share one in-memory copy
of the cache when it fits in RAM.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

from stepcli import StepcliError
from stepcli.cache.reader import FeatureCache
from stepcli.device import resolve_device
from stepcli.distributed import rank_and_world_size
from stepcli.extract.datasets.pairs import read_pairs
from stepcli.probe import PROBES
from stepcli.probe.data import use_memory
from stepcli.probe.logreg import LOGREG
from stepcli.probe.report import (
    plot_accuracy_vs_params,
    plot_confusion,
    plot_order_sensitivity,
    plot_shuffle,
    shuffle_markdown,
    write_tables,
)
from stepcli.probe.run import CONFIG, load_run
from stepcli.probe.shuffle import ORIGINAL, RESULTS, REVERSED, SHUFFLED, ShuffleConfig, shuffle_test
from stepcli.probe.train import TrainConfig, train_probe

RUNS = "runs"
# train settings that must match for an existing run to be reused
REUSE_KEYS = ("probe", "epochs", "lr", "weight_decay", "batch_size", "warmup_epochs", "seed", "shots", "train_fraction")


def all_probes() -> list[str]:
    return [*PROBES, LOGREG]


@dataclass
class CompareConfig:
    cache: Path
    out: Path
    probes: list[str] = field(default_factory=all_probes)
    epochs: int | None = None  # None: train-probe's default
    lr: float | None = None
    batch_size: int | None = None
    permutations: int = 20
    seed: int = 0
    device: str = "auto"
    pairs_file: Path | None = None
    quiet: bool = False


@dataclass
class Comparison:
    rows: list[dict]
    tables: dict[str, Path]
    plots: dict[str, Path]
    markdown: str


def _say(cfg: CompareConfig, message: str) -> None:
    if not cfg.quiet:
        print(message, file=sys.stderr, flush=True)


def _train_config(cfg: CompareConfig, probe: str) -> TrainConfig:
    given = {"epochs": cfg.epochs, "lr": cfg.lr, "batch_size": cfg.batch_size}
    overrides = {k: v for k, v in given.items() if v is not None}
    out = Path(cfg.out) / RUNS / probe
    return TrainConfig(cache=Path(cfg.cache), probe=probe, out=out, seed=cfg.seed, device=cfg.device,
                       quiet=cfg.quiet, **overrides)  # fmt: skip


def _reusable(tcfg: TrainConfig, cache: FeatureCache) -> bool:
    """True when `tcfg.out` holds a finished run of the same probe, settings and cache."""
    path = Path(tcfg.out) / CONFIG
    if not path.is_file():
        return False
    try:
        config = json.loads(path.read_text())
        recorded = config["train"]
        same_cache = Path(config["cache"]["path"]) == cache.path.resolve()
    except (json.JSONDecodeError, KeyError, TypeError):
        return False
    wanted = {f.name: getattr(tcfg, f.name) for f in fields(tcfg)}
    return same_cache and all(recorded.get(k) == wanted[k] for k in REUSE_KEYS)


def _row(result: dict, run_dir: Path, train_time: float | None, shuffle_time: float) -> dict:
    s = result["summary"]
    return {
        "probe": result["probe"],
        "num_params": result["num_params"],
        "top1": s[ORIGINAL]["top1"],
        "mean_class_accuracy": s[ORIGINAL]["mean_class_accuracy"],
        "pair_top1": s[ORIGINAL]["pair_top1"],
        "shuffled_top1": s[SHUFFLED]["top1"]["mean"],
        "shuffled_pair_top1": s[SHUFFLED]["pair_top1"]["mean"],
        "reversed_top1": s[REVERSED]["top1"],
        "reversed_pair_top1": s[REVERSED]["pair_top1"],
        "reversed_pair_partner_rate": s[REVERSED]["pair_partner_rate"],
        "flip_rate": s[SHUFFLED]["flip_rate"]["mean"],
        "reversed_flip_rate": s[REVERSED]["flip_rate"],
        "train_time_s": train_time,
        "shuffle_time_s": round(shuffle_time, 3),
        "run": str(run_dir),
    }


def _check(cfg: CompareConfig) -> None:
    unknown = [p for p in cfg.probes if p not in all_probes()]
    if unknown or not cfg.probes:
        raise StepcliError(
            f"unknown probe(s) {', '.join(unknown) or '(none given)'}; valid probes: {', '.join(all_probes())}"
        )
    if len(set(cfg.probes)) != len(cfg.probes):
        raise StepcliError(f"--probes lists a probe twice: {','.join(cfg.probes)}")
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


def run_compare(cfg: CompareConfig) -> Comparison:
    """Train (or reuse), shuffle-test and tabulate every probe in `cfg.probes`."""
    _check(cfg)
    cache = FeatureCache(cfg.cache)
    pairs, source = cache.manifest.pairs, "cache manifest"
    if cfg.pairs_file is not None:
        pairs, source = read_pairs(cfg.pairs_file, cache.class_names), str(cfg.pairs_file)
    if use_memory(cache, "auto"):
        cache.load_into_memory()
    device = resolve_device(cfg.device).type
    shuffle_cfg = ShuffleConfig(permutations=cfg.permutations, seed=cfg.seed, device=device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, results = [], {}
    for n, name in enumerate(cfg.probes, start=1):
        tcfg = _train_config(cfg, name)
        if _reusable(tcfg, cache):
            _say(cfg, f"[{n}/{len(cfg.probes)}] {name}: reusing the finished run in {tcfg.out}")
            run = load_run(tcfg.out)
        else:
            _say(cfg, f"[{n}/{len(cfg.probes)}] {name}: training")
            run = train_probe(tcfg, cache)
        tick = time.monotonic()
        result = shuffle_test(run, cache, shuffle_cfg, pairs=pairs, pairs_source=source)
        shuffle_time = time.monotonic() - tick
        shuffle_dir = Path(tcfg.out) / "shuffle"
        shuffle_dir.mkdir(exist_ok=True)
        (shuffle_dir / RESULTS).write_text(json.dumps(result, indent=2) + "\n")
        plot_shuffle(result, shuffle_dir / "shuffle.png")
        _say(cfg, shuffle_markdown(result))
        rows.append(_row(result, Path(tcfg.out), run.timing.get("train_time_s"), shuffle_time))
        results[name] = result
    best = max(rows, key=lambda r: (r["top1"] or 0, r["pair_top1"] or 0, -r["num_params"]))
    plots = {
        "accuracy_vs_params": plot_accuracy_vs_params(rows, out / "accuracy_vs_params.png"),
        "order_sensitivity": plot_order_sensitivity(rows, out / "order_sensitivity.png"),
        "confusion": plot_confusion(
            results[best["probe"]]["confusion_matrix"], cache.class_names, pairs,
            f"{best['probe']} (best test top-1): confusion matrix on test", out / f"confusion_{best['probe']}.png",
        ),
    }  # fmt: skip
    meta = {
        "cache": str(cache.path.resolve()),
        "probes": cfg.probes,
        "epochs": cfg.epochs if cfg.epochs is not None else TrainConfig.epochs,
        "permutations": cfg.permutations,
        "seed": cfg.seed,
        "pairs": [list(p) for p in pairs],
        "pairs_source": source,
        "best_probe": best["probe"],
        "plots": {k: str(v) for k, v in plots.items()},
    }
    tables = write_tables(out, rows, meta)
    return Comparison(rows=rows, tables=tables, plots=plots, markdown=tables["md"].read_text())
