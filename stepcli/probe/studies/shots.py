"""`stepcli compare --shots 1,2,4 --folds 3`: accuracy with K training clips per class, per probe.

Each (K, fold) cell is an ordinary comparison in OUT/shots-<K>/fold-<f>/ (it resumes like one),
trained on K clips per class drawn with seed `seed + f` (so each fold is a different draw, the
same for every probe) and evaluated on the full test split. Its shuffle test runs one permutation:
the curve needs ordered-frame accuracy only. The curve's points are the mean over folds, its error
bars their sample std.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from stepcli.cache.reader import FeatureCache
from stepcli.errors import StepcliError
from stepcli.files import write_atomic
from stepcli.outputs import check_out
from stepcli.probe.evaluation.metrics import STD_NAME, mean_std
from stepcli.probe.studies.compare import CompareConfig, config_record, run_compare
from stepcli.probe.studies.figures import new_figure
from stepcli.probe.studies.page import Page, provenance, reproduce, write_page
from stepcli.probe.studies.report import fmt, markdown_table
from stepcli.probe.studies.results import ComparisonRow

#: (key of a comparison row, what the curve's panel shows)
CURVES = (("top1", "all test clips"), ("pair_top1", "nearly-symmetric pairs"))


@dataclass(frozen=True)
class ShotsPoint:
    """One probe at K clips per class: mean and sample std over the folds, and each fold's value."""

    probe: str
    shots: int
    folds: int
    top1: float | None
    top1_std: float | None
    pair_top1: float | None
    pair_top1_std: float | None
    per_fold_top1: tuple[float | None, ...]
    per_fold_pair_top1: tuple[float | None, ...]

    @classmethod
    def of(cls, probe: str, shots: int, rows: list[ComparisonRow]) -> ShotsPoint:
        top1, pair = ([getattr(r, key) for r in rows] for key, _ in CURVES)
        return cls(probe, shots, len(rows), *mean_std(top1), *mean_std(pair), tuple(top1), tuple(pair))


def parse_shots(text: str) -> tuple[int, ...]:
    """`1,2,4,8` as distinct positive integers in increasing order."""
    try:
        shots = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise StepcliError(f"--shots {text!r} must be comma-separated integers, e.g. 1,2,4,8") from None
    if not shots or min(shots) < 1 or len(set(shots)) != len(shots):
        raise StepcliError(f"--shots {text!r} must list positive clip counts per class, each once")
    return tuple(sorted(shots))


def run_shots(cfg: CompareConfig, shots: tuple[int, ...], folds: int) -> dict[str, Path]:
    """Every probe of `cfg` at each K of `shots`, `folds` draws each; the table and curve in OUT."""
    if folds < 1:
        raise StepcliError(f"--folds must be >= 1, got {folds}")
    check_out(cfg.out, "shots study")
    if cfg.seeds:
        raise StepcliError("--shots draws its folds with --seed + fold; give --folds, not --seeds")
    points: list[ShotsPoint] = []
    runs: list[str] = []  # every cell's run, in order: the first's splits stand in the page's provenance
    cache = FeatureCache(cfg.cache, layer=cfg.layer)
    commands = reproduce(cache, "compare", cfg.out)  # each cell's page: the whole study's
    for k in shots:
        per_probe: dict[str, list[ComparisonRow]] = {}
        for fold in range(folds):
            seed = cfg.seed + fold
            cell = replace(cfg, out=Path(cfg.out) / f"shots-{k}" / f"fold-{fold}", seed=seed, permutations=1,
                           train=replace(cfg.training, shots=k, seed=seed))  # fmt: skip
            for row in run_compare(cell, commands).rows:
                per_probe.setdefault(row.probe, []).append(row)
                runs.append(row.run)
        points += [ShotsPoint.of(probe, k, rows) for probe, rows in per_probe.items()]
    meta = {"shots": list(shots), "folds": folds, "seed": cfg.seed}
    paths = write_shots_outputs(Path(cfg.out), points, meta)
    page = Page(
        title=f"stepcli compare --shots: {len(per_probe)} probes on {cache.manifest.dataset.name}",
        markdown=paths["md"].read_text(), plots={"shots": paths["png"]}, config={"compare": config_record(cfg), **meta},
        provenance=provenance(cache, Path(runs[0])),
        commands=commands,
    )  # fmt: skip
    paths["html"] = write_page(Path(cfg.out), page)
    return paths


def write_shots_outputs(out: Path, points: list[ShotsPoint], meta: dict) -> dict[str, Path]:
    """shots.md (a row per probe and K), .csv, .json and shots.png."""
    out.mkdir(parents=True, exist_ok=True)
    header = ["probe", "clips per class", "folds", "top-1", "sym. pairs"]

    def cell(value: float | None, std: float | None) -> str:
        return fmt(value, "pct") if value is None or std is None else f"{100 * value:.1f} ± {100 * std:.1f}%"

    rows = [[p.probe, str(p.shots), str(p.folds), cell(p.top1, p.top1_std), cell(p.pair_top1, p.pair_top1_std)]
            for p in points]  # fmt: skip
    title = f"Test accuracy by training clips per class (mean ± {STD_NAME} over folds)\n\n"
    paths = {ext: out / f"shots.{ext}" for ext in ("md", "csv", "json")}
    write_atomic(paths["md"], title + markdown_table(header, rows))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    keys = [k for k in asdict(points[0]) if not k.startswith("per_fold")]
    writer.writerow(keys)
    writer.writerows([[getattr(p, k) if getattr(p, k) is not None else "" for k in keys] for p in points])
    write_atomic(paths["csv"], buffer.getvalue())
    write_atomic(paths["json"], json.dumps({**meta, "std": STD_NAME, "points": [asdict(p) for p in points]}, indent=2))
    paths["png"] = plot_shots(points, out / "shots.png")
    return paths


def plot_shots(points: list[ShotsPoint], path: Path) -> Path:
    """Accuracy vs. clips per class, one line per probe, error bars the std over folds; the second
    panel for the clips of nearly-symmetric pairs, where only order tells the classes apart."""
    fig = new_figure(11, 4.2)
    axes = fig.subplots(1, len(CURVES), sharey=True)
    probes = list(dict.fromkeys(p.probe for p in points))
    for ax, (key, label) in zip(axes, CURVES, strict=True):
        for probe in probes:
            mine = [p for p in points if p.probe == probe]
            values = [100 * (getattr(p, key) or 0.0) for p in mine]
            errors = [100 * (getattr(p, f"{key}_std") or 0.0) for p in mine]
            ax.errorbar([p.shots for p in mine], values, yerr=errors, marker="o", capsize=3, label=probe)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({p.shots for p in points}), [str(s) for s in sorted({p.shots for p in points})])
        ax.set_xlabel("training clips per class")
        ax.set_title(f"test top-1, {label}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    axes[-1].legend(fontsize=8)
    fig.suptitle(f"Low-data curves: mean ± {STD_NAME} over folds")
    fig.savefig(path)
    return path
