"""Repeating a run over seeds: one run per seed, and mean ± std of its test numbers.

A single seed hides how much a probe's accuracy moves with its initialisation and batch order,
which on small benchmarks is often more than the gap between probes. The std is the sample
standard deviation over seeds (ddof=1; 0 for one seed).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from stepcli.cache.reader import FeatureCache
from stepcli.distributed import rank_and_world_size
from stepcli.errors import StepcliError
from stepcli.files import write_atomic
from stepcli.outputs import check_out
from stepcli.probe.config import TrainConfig
from stepcli.probe.data import resolve_splits, subsample_train
from stepcli.probe.evaluation.metrics import STD_NAME, mean_std
from stepcli.probe.models import probe_class
from stepcli.probe.runs.rundir import CONFIG, Run
from stepcli.probe.studies.report import fmt, markdown_table
from stepcli.probe.studies.results import ComparisonRow
from stepcli.probe.training.loop import train_probe, train_runs

log = logging.getLogger(__name__)
SEEDS = "seeds.json"
SUMMARY_KEYS = ("top1", "top5", "mean_class_accuracy")


def seed_dir(out: Path | str, seed: int) -> Path:
    return Path(out) / f"seed-{seed}"


def one_run(run_dir: Path) -> Path:
    """A row's run; for a comparison over seeds (`runs/<probe>/seed-<s>`), the run of the lowest seed."""
    if (run_dir / CONFIG).is_file():
        return run_dir
    found = [p for p in run_dir.glob("seed-*") if p.name[len("seed-") :].lstrip("-").isdigit()]
    seeds = sorted(found, key=lambda p: int(p.name[len("seed-") :]))  # seed-2 before seed-10
    if not seeds:
        raise StepcliError(f"{run_dir} holds no finished run; rerun the comparison")
    return seeds[0]


@dataclass(frozen=True)
class SeedSummary:
    """seeds.json: the per-seed test numbers of a probe and their mean and std."""

    probe: str
    seeds: tuple[int, ...]
    runs: tuple[str, ...]
    per_seed: dict[str, list]
    mean: dict[str, float | None]
    std: dict[str, float | None]

    @classmethod
    def of(cls, probe: str, seeds: list[int], runs: list[Path], metrics: list[dict]) -> SeedSummary:
        keys = [k for k in SUMMARY_KEYS if any(k in m for m in metrics)]
        per_seed = {k: [m.get(k) for m in metrics] for k in keys}
        stats = {k: mean_std(v) for k, v in per_seed.items()}
        return cls(probe, tuple(seeds), tuple(map(str, runs)), per_seed,
                   {k: s[0] for k, s in stats.items()}, {k: s[1] for k, s in stats.items()})  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {"probe": self.probe, "seeds": list(self.seeds), "runs": list(self.runs), "per_seed": self.per_seed,
                "mean": self.mean, "std": self.std}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict) -> SeedSummary:
        return cls(data["probe"], tuple(data["seeds"]), tuple(data["runs"]), dict(data["per_seed"]),
                   dict(data["mean"]), dict(data["std"]))  # fmt: skip


def train_seeds(cfg: TrainConfig, seeds: list[int], sweep: dict[str, list] | None = None) -> SeedSummary | None:
    """`train-probe --seeds`: one run (or sweep) per seed in OUT/seed-<s>, the summary in OUT/seeds.json.

    The cache is opened once (and loaded into memory once when it fits) for every seed, and the
    seeds train in one pass as stacked heads when they can (`seed_runs`). Under torchrun only
    rank 0 gets the summary; the others return None."""
    out = check_out(cfg.out, "seeds study")
    if (out / CONFIG).exists():
        raise StepcliError(f"--out {out} is a single run; give a new --out for a run per seed")
    cache = FeatureCache(cfg.cache, layer=cfg.layer)
    runs = seed_runs([replace(cfg, seed=seed, out=seed_dir(out, seed)) for seed in seeds], cache, sweep)
    if runs is None:
        return None
    summary = SeedSummary.of(cfg.probe, seeds, [run.run_dir for run in runs], [run.metrics for run in runs])
    write_atomic(out / SEEDS, json.dumps(summary.to_dict(), indent=2) + "\n")
    return summary


def one_pass(cfgs: list[TrainConfig], cache: FeatureCache) -> bool:
    """Whether runs of several seeds can train as heads of one pass: a gradient-trained probe in one
    process, and seeds that draw the same val and test clips (a cache with its own splits) and as
    many train clips (their --shots / --train-fraction subsets may differ). Each keeps its own
    initialisation, train subset, batch order and views."""
    if len(cfgs) < 2 or probe_class(cfgs[0].probe).capabilities.fitted or rank_and_world_size()[1] > 1:
        return False
    splits = []
    for cfg in cfgs:
        split = resolve_splits(cache, cfg.seed)
        labels = cache.labels[split.train]
        train = subsample_train(split.train, labels, cache.class_names, cfg.seed, cfg.shots, cfg.train_fraction)
        splits.append((len(train), split.train.tolist(), split.val.tolist(), split.test.tolist()))
    return all(s == splits[0] for s in splits)


def seed_runs(cfgs: list[TrainConfig], cache: FeatureCache, sweep: dict[str, list] | None = None) -> list[Run] | None:
    """The runs of `cfgs` (one per seed): in one pass when `one_pass` allows, else one after another."""
    if one_pass(cfgs, cache):
        log.info(f"{cfgs[0].probe}: seeds {', '.join(str(c.seed) for c in cfgs)} as heads of one pass")
        return train_runs(cfgs, cache, sweep)
    runs = []
    for cfg in cfgs:
        run = train_probe(cfg, cache, sweep=sweep)
        if run is None:
            return None
        runs.append(run)
    return runs


def pm(mean: float | None, std: float | None) -> str:
    """`98.6 ± 0.4%` (percent), or `–` when there is nothing to show."""
    if mean is None:
        return "–"
    return f"{100 * mean:.1f} ± {100 * (std or 0.0):.1f}%"


def seeds_markdown(summary: SeedSummary | None) -> str:
    """One line per seed and a mean ± std line, as a markdown table."""
    if summary is None:
        return ""
    keys = list(summary.per_seed)
    rows = [[f"seed {s}"] + [fmt(summary.per_seed[k][i], "pct") for k in keys] for i, s in enumerate(summary.seeds)]
    rows.append([f"mean ± {STD_NAME}"] + [pm(summary.mean[k], summary.std[k]) for k in keys])
    return f"{summary.probe}, test split, {len(summary.seeds)} seeds\n\n" + markdown_table(["run", *keys], rows)


def mean_row(rows: list[ComparisonRow], run: Path) -> tuple[ComparisonRow, dict[str, float | None]]:
    """One probe's comparison row over seeds: the mean of every number, and their stds by key."""
    numeric = [
        f.name for f in fields(ComparisonRow) if f.name not in ("probe", "run", "top1_ci", "num_params", "selected")
    ]
    stats = {k: mean_std([getattr(r, k) for r in rows]) for k in numeric}
    chosen = list(dict.fromkeys(r.selected for r in rows))  # each seed selects its own head on val
    selected = chosen[0] if len(chosen) == 1 else "per seed: " + " / ".join(str(r.selected) for r in rows)
    row = replace(rows[0], **{k: v[0] for k, v in stats.items()}, top1_ci=None, run=str(run), selected=selected)
    return row, {k: v[1] for k, v in stats.items()}
