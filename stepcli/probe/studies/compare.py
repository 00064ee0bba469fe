"""`stepcli compare`: train several probes on one cache, shuffle-test each, one table and plots.

Every probe trains on the same cached tokens, splits and seed, so the table compares like for
like. A probe whose run directory already holds a complete run with the same settings is reused,
so an interrupted comparison resumes where it stopped. The shuffle tests share one in-memory copy
of the cache when it fits in RAM.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from stepcli.cache.reader import FeatureCache
from stepcli.distributed import rank_and_world_size
from stepcli.errors import StepcliError
from stepcli.outputs import check_out
from stepcli.probe.config import TrainConfig
from stepcli.probe.data import use_memory
from stepcli.probe.models import DEFAULT_PROBES, PROBES, probe_class, probe_options
from stepcli.probe.models.specs import ProbeSpec, parse_spec
from stepcli.probe.runs.compat import check_frame_cls
from stepcli.probe.runs.rundir import CONFIG, METRICS, Run, load_run, read_run_config
from stepcli.probe.studies.frames import FRAMES_DIR
from stepcli.probe.studies.page import Page, provenance, reproduce, write_page
from stepcli.probe.studies.plots import plot_per_pair
from stepcli.probe.studies.report import (
    plot_accuracy_vs_params,
    plot_confusion,
    plot_order_sensitivity,
    shuffle_markdown,
    write_tables,
)
from stepcli.probe.studies.results import ComparisonRow, study_relative
from stepcli.probe.studies.seeds import mean_row, seed_dir, seed_runs
from stepcli.probe.studies.shuffle import SHUFFLE_DIR, ShuffleConfig, pairs_for, shuffle_test, write_shuffle_outputs
from stepcli.probe.studies.tuning import check_compare_sweep, selected_values, sweep_for, swept_differences

log = logging.getLogger(__name__)
RUNS = "runs"


@dataclass(frozen=True)
class CompareConfig:
    """The options of `compare`. `train` is the training config every probe's run starts from (its
    probe, output directory and seed are filled in per run); shuffle defaults are shuffle-test's."""

    cache: Path
    out: Path
    #: probe specs, each a row: a name, or a name with options (`step[cls=frame]`, see `specs.py`)
    probes: tuple[str, ...] = tuple(DEFAULT_PROBES)
    train: TrainConfig | None = None  # None: train-probe's defaults
    permutations: int = ShuffleConfig.permutations
    seed: int = 0
    pairs_file: Path | None = None
    #: several seeds: one run per seed in runs/<probe>/seed-<s>, the table shows mean ± std
    seeds: tuple[int, ...] = ()
    #: `{key: [values]}`: every gradient-trained probe tunes over this grid and keeps its head
    #: selected on val (see `tuning.py`); fitted probes train as they are
    sweep: dict[str, list] = field(default_factory=dict)
    #: a row that cannot run on this cache (`step[cls=frame]` on a backbone without CLS) is left
    #: out with a warning instead of refused: an ablation's rows are a set, not the user's choice
    optional_rows: bool = False

    @property
    def training(self) -> TrainConfig:
        return self.train or TrainConfig(cache=Path(self.cache), probe="", out=Path(self.out))

    @property
    def specs(self) -> tuple[ProbeSpec, ...]:
        return tuple(parse_spec(p) for p in self.probes)

    @property
    def layer(self) -> int | None:
        """Which of the cache's layers; None: its first."""
        return self.training.layer

    @property
    def device(self) -> str:
        return self.training.device


@dataclass
class Comparison:
    rows: list[ComparisonRow]
    tables: dict[str, Path]
    plots: dict[str, Path]
    markdown: str


def _train_config(cfg: CompareConfig, spec: ProbeSpec, seed: int | None = None) -> TrainConfig:
    """Without `seed` (no --seeds): the run of `cfg.seed` in runs/<spec>; else runs/<spec>/seed-<s>."""
    out = Path(cfg.out) / RUNS / spec.dirname
    out = out if seed is None else seed_dir(out, seed)
    options = {**cfg.training.probe_options, **spec.option_dict}
    return replace(cfg.training, cache=Path(cfg.cache), probe=spec.name, out=out,
                   seed=cfg.seed if seed is None else seed, probe_options=options)  # fmt: skip


def _resolved(tcfg: TrainConfig) -> TrainConfig:
    """`tcfg` with every probe option spelled out, so that a default given explicitly matches its absence."""
    return replace(tcfg, probe_options={**probe_options(tcfg.probe), **tcfg.probe_options})


def reuse_differences(tcfg: TrainConfig, cache: FeatureCache, sweep: dict | None = None) -> list[str] | None:
    """None when `tcfg.out` holds no finished run; else why that run is not the one `tcfg` asks for
    ([] when it is: the same cache, sweep and the whole training config but runtime-only fields)."""
    if not (Path(tcfg.out) / CONFIG).is_file():
        return None  # not trained yet, or cut short: train it
    tcfg, swept = swept_differences(tcfg, sweep or {})
    if swept:
        return swept
    try:
        recorded = read_run_config(tcfg.out)
    except StepcliError as err:  # damaged: say so rather than train over it
        raise StepcliError(f"{err}; delete {tcfg.out} to train it again") from None
    if recorded.probe not in PROBES or recorded.probe != recorded.train.probe:
        raise StepcliError(
            f"{Path(tcfg.out) / CONFIG} names probe {recorded.probe!r} (trained as {recorded.train.probe!r}); "
            f"the run is damaged: delete {tcfg.out} to train it again"
        )
    try:  # metrics only restate what training reported: damaged, the run is retrained, not refused again
        json.loads((Path(tcfg.out) / METRICS).read_text())
    except (OSError, ValueError):
        return [f"the run is damaged ({METRICS} cannot be read)"]
    diff = [] if recorded.cache.path == cache.path.resolve() else [f"cache: {recorded.cache.path} -> {cache.path}"]
    if recorded.probe != tcfg.probe:
        return [*diff, f"probe: {recorded.probe!r} -> {tcfg.probe!r}"]
    return diff + _resolved(recorded.train).training_differences(_resolved(tcfg))


def check_compare_config(cfg: CompareConfig) -> None:
    if not cfg.probes:
        raise StepcliError(f"--probes names no probe; valid probes: {', '.join(PROBES)}")
    specs = cfg.specs  # an unknown probe or option is refused here, before any run
    if len({s.dirname for s in specs}) != len(specs):
        raise StepcliError(f"--probes lists a probe twice: {','.join(cfg.probes)}")
    for spec in specs:
        check_compare_sweep(spec.name, cfg.sweep, {**cfg.training.probe_options, **spec.option_dict})
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


def _trained_runs(
    cfg: CompareConfig, spec: ProbeSpec, n: int, cache: FeatureCache, seeds: list[int | None]
) -> list[Run]:
    """The run of `spec` for every seed: finished ones reused, the others trained (the seeds in one
    pass when they can be)."""
    tcfgs = [_train_config(cfg, spec, seed) for seed in seeds]
    sweep = sweep_for(spec.name, cfg.sweep)
    todo = []
    for seed, tcfg in zip(seeds, tcfgs, strict=True):
        which = f"[{n}/{len(cfg.probes)}] {spec.label}" + ("" if seed is None else f" seed {seed}")
        diff = reuse_differences(tcfg, cache, sweep)
        if diff == []:
            log.info(f"{which}: reusing the finished run in {tcfg.out}")
            continue
        if diff:
            log.warning(f"{which}: {tcfg.out} holds a run of other settings (recorded -> asked: {'; '.join(diff)}); "
                        "training it again")  # fmt: skip
        log.info(f"{which}: training")
        todo.append(tcfg)
    if todo:
        seed_runs(todo, cache, sweep=sweep)
    return [load_run(tcfg.out) for tcfg in tcfgs]


def runnable_rows(cfg: CompareConfig, cache: FeatureCache) -> CompareConfig:
    """`cfg` with every row checked against the cache's tokens before any training: a row that cannot
    run is refused in one line, or, for `optional_rows`, left out with a warning."""
    kept = []
    for text, spec in zip(cfg.probes, cfg.specs, strict=True):
        try:
            probe_class(spec.name).check_layout(cache.layout)
            options = {**cfg.training.probe_options, **spec.option_dict}
            check_frame_cls(probe_class(spec.name), options, cache.manifest.extraction)
        except StepcliError as err:
            if not cfg.optional_rows:
                raise StepcliError(f"--probes {spec.label}: {err}") from None
            log.warning(f"warning: row {spec.label} left out: {err}")
            continue
        kept.append(text)
    if not kept:
        raise StepcliError(f"no row of the comparison can run on cache {cache.path}")
    return replace(cfg, probes=tuple(kept))


def earlier_rows(out: Path) -> list[str] | None:
    """The rows of the comparison already in `out` (None: none there, or unreadable)."""
    try:
        return list(json.loads((out / "comparison.json").read_text())["probes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def drop_stale_outputs(out: Path, plots: dict[str, Path], earlier: list[str] | None, rows: list[str]) -> None:
    """After a rerun with other rows: an earlier best probe's confusion plot and the frames study
    (`stepcli frames`) describe rows this comparison.json no longer holds, so they go (with a note)."""
    stale = [p for p in out.glob("confusion_*.png") if p not in plots.values()]
    if earlier is not None and earlier != rows and (out / FRAMES_DIR).is_dir():
        stale.append(out / FRAMES_DIR)
    for path in stale:
        log.info(f"removing {path}: it was made from an earlier comparison in {out}")
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def config_record(cfg: CompareConfig) -> dict:
    """The study's config record as plain JSON values (its training config flattened in)."""
    record = {k: v for k, v in vars(cfg).items() if k != "train"}
    record["train"] = cfg.training.to_dict()
    return json.loads(json.dumps(record, default=str))


def run_compare(cfg: CompareConfig, commands: tuple[str, ...] | None = None) -> Comparison:
    """Train (or reuse), shuffle-test and tabulate every probe in `cfg.probes`. `commands`: what
    report.html gives as the commands that reproduce the study, when it is part of a larger one (a
    --shots or --layers cell, the demo); None: extract and `compare --config OUT/config.yaml`."""
    check_compare_config(cfg)
    check_out(cfg.out, "comparison")
    cache = FeatureCache(cfg.cache, layer=cfg.layer)
    cfg = runnable_rows(cfg, cache)
    earlier = earlier_rows(Path(cfg.out))
    pairs, source = pairs_for(cache, cfg.pairs_file)
    if use_memory(cache, cfg.training.in_memory):
        cache.load_into_memory()
    shuffle_cfg = ShuffleConfig(permutations=cfg.permutations, seed=cfg.seed, device=cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(cfg.seeds) or [None]
    per_seed: dict[str, list[ComparisonRow]] = {}
    results = {}
    specs = {spec.label: spec for spec in cfg.specs}
    start = time.monotonic()
    for n, (name, spec) in enumerate(specs.items(), start=1):
        if n > 1:
            left = (time.monotonic() - start) / (n - 1) * (len(specs) - n + 1)
            log.info(f"compare: probe {n} of {len(specs)} ({name}); about {left:.0f} s left at the pace so far")
        for run in _trained_runs(cfg, spec, n, cache, seeds):
            tick = time.monotonic()
            result = shuffle_test(run, cache, shuffle_cfg, pairs=pairs, pairs_source=source)
            result = replace(result, probe=name)  # the row's spec, e.g. step[cls=frame]
            shuffle_time = time.monotonic() - tick
            write_shuffle_outputs(result, run.run_dir / SHUFFLE_DIR, study=cfg.out)
            log.info(shuffle_markdown(result))
            row = ComparisonRow.of(result, run.run_dir, run.timing.get("train_time_s"), shuffle_time)
            leaked = sum(run.metrics.get("leakage", {}).values()) or None
            row = replace(row, selected=selected_values(run.run_dir), val_top1=run.metrics.get("val", {}).get("top1"),
                          leaked=leaked)  # fmt: skip
            per_seed.setdefault(name, []).append(row)
            results.setdefault(name, result)  # the first seed's confusion matrix stands for the probe
    spread = None
    if cfg.seeds:
        means = {name: mean_row(group, out / RUNS / specs[name].dirname) for name, group in per_seed.items()}
        rows, spread = [m[0] for m in means.values()], {name: m[1] for name, m in means.items()}
    else:
        rows = [group[0] for group in per_seed.values()]
    best = max(rows, key=lambda r: (r.top1 or 0, r.pair_top1 or 0, -r.num_params))
    plots = {
        "accuracy_vs_params": plot_accuracy_vs_params(rows, out / "accuracy_vs_params.png", spread),
        "order_sensitivity": plot_order_sensitivity(rows, out / "order_sensitivity.png", spread),
        "confusion": plot_confusion(
            results[best.probe].confusion_matrix, cache.class_names, pairs,
            f"{best.probe} (best test top-1): confusion matrix on test",
            out / f"confusion_{specs[best.probe].dirname}.png",
        ),
    }  # fmt: skip
    if pairs:  # the paper's Figure 3: each class of a pair, every probe side by side
        per_class = {name: {c: change.original for c, change in r.per_class.items()} for name, r in results.items()}
        plots["per_pair"] = plot_per_pair(per_class, pairs, out / "per_pair.png")
    meta = {
        "cache": str(cache.path.resolve()), "probes": list(specs), "epochs": cfg.training.epochs,
        "permutations": cfg.permutations, "seed": cfg.seed, "pairs": [list(p) for p in pairs],
        "pairs_source": source, "best_probe": best.probe, **({"sweep": cfg.sweep} if cfg.sweep else {}),
        "plots": {k: study_relative(v, out) for k, v in plots.items()},
    }  # fmt: skip
    if cfg.seeds:
        meta["seeds"] = list(cfg.seeds)
    tables = write_tables(out, rows, meta, spread, per_seed if cfg.seeds else None)
    drop_stale_outputs(out, plots, earlier, list(specs))

    page = Page(
        title=f"stepcli compare: {len(rows)} probes on {cache.manifest.dataset.name}", markdown=tables["md"].read_text(),
        plots=plots, config={"compare": config_record(cfg), **meta},
        provenance=provenance(cache, Path(per_seed[rows[0].probe][0].run)), commands=reproduce(cache, "compare", out) if commands is None else commands,
    )  # fmt: skip
    tables["html"] = write_page(out, page)
    return Comparison(rows=rows, tables=tables, plots=plots, markdown=tables["md"].read_text())


__all__ = ["CompareConfig", "Comparison", "ComparisonRow", "run_compare"]
