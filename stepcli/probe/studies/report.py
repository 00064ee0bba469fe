"""Tables (markdown, CSV, JSON) and PNG plots of shuffle tests and probe comparisons.

Plots are drawn on `matplotlib.figure.Figure` objects with the Agg canvas, never through pyplot:
no display, no global figure state, nothing to close, safe to call from tests and servers.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from stepcli.files import write_atomic
from stepcli.probe.evaluation.metrics import STD_NAME
from stepcli.probe.runs.rundir import TIMING
from stepcli.probe.studies.figures import new_figure, plotted
from stepcli.probe.studies.results import ORIGINAL, REVERSED, SHUFFLED, TIME_KEYS, ComparisonRow, ShuffleResult

# (key in a comparison row, column title, how to show it)
COLUMNS: list[tuple[str, str, str]] = [
    ("probe", "probe", "str"),
    ("num_params", "params", "int"),
    ("top1", "top-1", "pct"),
    ("top1_ci", "top-1 95% CI", "ci"),
    ("top5", "top-5", "pct"),
    ("mean_class_accuracy", "mean per-class", "pct"),
    ("pair_top1", "sym. pairs", "pct"),
    ("shuffled_top1", "shuffled", "pct"),
    ("reversed_top1", "reversed", "pct"),
    ("reversed_pair_top1", "sym. pairs reversed", "pct"),
    ("flip_rate", "flip rate", "pct"),
    ("train_time_s", "train time", "sec"),
    ("selected", "selected on val", "str"),
]
#: shown after `COLUMNS` only when a run found any (`Leakage`): a clean table looks as it always did
WARNING_COLUMNS: list[tuple[str, str, str]] = [("leaked", "val+test = train", "int")]
ORDER_COLOURS = {ORIGINAL: "#4c72b0", SHUFFLED: "#dd8452", REVERSED: "#c44e52"}
LABELLED_CLASSES = 30  # confusion matrices with at most this many classes get counts and class names


def fmt(value: object, kind: str) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if kind == "pct":
        return f"{100 * float(value):.1f}%"
    if kind == "ci":
        low, high = value
        return "–" if low is None else f"{100 * float(low):.1f}–{100 * float(high):.1f}%"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "sec":
        return f"{float(value):.1f} s"
    return str(value)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table; every column but the first right-aligned."""
    align = [":---"] + ["---:"] * (len(header) - 1)
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines) + "\n"


def shuffle_markdown(result: ShuffleResult) -> str:
    """One row per order (shuffled: mean over the K permutations, with min–max of top-1)."""
    header = ["frame order", "top-1", "top-1 95% CI", "mean per-class", "flip rate", "sym. pairs", "pairs → partner"]
    keys = ("top1", "mean_class_accuracy", "flip_rate", "pair_top1", "pair_partner_rate")

    def ci(order: str) -> str:
        return fmt(result.intervals[order]["top1"], "ci") if order in result.intervals else "–"

    orders = ((ORIGINAL, result.original), (REVERSED, result.reversed))
    rows = [[name, fmt(metrics.top1, "pct"), ci(name)] + [fmt(getattr(metrics, k), "pct") for k in keys[1:]]
            for name, metrics in orders]  # fmt: skip
    if result.permutations:
        top = result.shuffled.top1
        label = f"shuffled (mean of {result.permutations}; top-1 {fmt(top.min, 'pct')}–{fmt(top.max, 'pct')})"
        means = [fmt(getattr(result.shuffled, k).mean, "pct") for k in keys]
        rows.append([label, means[0], ci(SHUFFLED), *means[1:]])
    title = (
        f"{result.probe} ({result.num_params:,} params), {result.num_clips} test clips, "
        f"{len(result.pairs)} nearly-symmetric pairs ({result.pairs_source})\n\n"
    )
    return title + markdown_table(header, rows)


def shown_columns(rows: list[ComparisonRow]) -> list[tuple[str, str, str]]:
    """`COLUMNS` without those no row has a value for (top-5 with 5 classes or fewer)."""
    return [c for c in COLUMNS + WARNING_COLUMNS if any(getattr(r, c[0]) is not None for r in rows)]


def comparison_markdown(rows: list[ComparisonRow], spread: dict[str, dict] | None = None) -> str:
    """The table; with `spread` (`{probe: {key: std}}`, from several seeds) each value reads mean ± std."""
    columns = shown_columns(rows)

    def cell(row: ComparisonRow, key: str, kind: str) -> str:
        std = (spread or {}).get(row.probe, {}).get(key)
        if std is None or kind not in ("pct", "sec"):
            return fmt(getattr(row, key), kind)
        scale, unit = (100, "%") if kind == "pct" else (1, " s")
        return f"{scale * getattr(row, key):.1f} ± {scale * std:.1f}{unit}"

    header = [c[1] for c in columns]
    if spread:
        header[0] = f"{header[0]} (mean ± {STD_NAME} over seeds)"
    return markdown_table(header, [[cell(r, k, kind) for k, _, kind in columns] for r in rows])


def comparison_csv(rows: list[ComparisonRow]) -> str:
    """Raw values (fractions, seconds), one column per shown `COLUMNS` key, for spreadsheets and pandas."""
    keys = [k for k, _, kind in shown_columns(rows) if kind != "ci"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(keys)
    writer.writerows([["" if getattr(r, k) is None else getattr(r, k) for k in keys] for r in rows])
    return buffer.getvalue()


def write_tables(
    out: Path,
    rows: list[ComparisonRow],
    meta: dict,
    spread: dict[str, dict] | None = None,
    per_seed: dict[str, list[ComparisonRow]] | None = None,
) -> dict[str, Path]:
    """`comparison.md`, `.csv`, `.json` and `timing.json` in `out`; returns their paths.

    comparison.json holds results only (run directories relative to `out`, no wall-clock times), so
    a rerun writes it byte for byte; the times go to timing.json (the .md and .csv keep train time)."""
    out = Path(out)
    paths = {ext: out / f"comparison.{ext}" for ext in ("md", "csv", "json")}
    write_atomic(paths["md"], comparison_markdown(rows, spread))
    write_atomic(paths["csv"], comparison_csv(rows))
    record = {**meta, "rows": [r.result_dict(out) for r in rows]}
    timing: dict = {"rows": {r.probe: r.timing_dict() for r in rows}}
    if spread:  # the std over seeds: of results in comparison.json, of times in timing.json
        record["std"] = {name: {k: v for k, v in s.items() if k not in TIME_KEYS} for name, s in spread.items()}
        timing["std"] = {name: {k: s.get(k) for k in TIME_KEYS} for name, s in spread.items()}
    if per_seed:
        record["per_seed"] = {name: [r.result_dict(out) for r in group] for name, group in per_seed.items()}
        timing["per_seed"] = {name: [r.timing_dict() for r in group] for name, group in per_seed.items()}
    write_atomic(paths["json"], json.dumps(record, indent=2) + "\n")
    paths["timing"] = out / TIMING
    write_atomic(paths["timing"], json.dumps(timing, indent=2) + "\n")
    return paths


def _label_bars(ax, bars, values, vertical: bool = False, above: list[float] | None = None) -> None:
    """Print each bar's value on top of it, or on top of its error bar (`above`: the error sizes)."""
    for bar, value, extra in zip(bars, values, above or [0.0] * len(values), strict=True):
        if value is not None and not np.isnan(value):
            top = bar.get_height() + (0.0 if np.isnan(extra) else extra)
            ax.annotate(f"{100 * value:.0f}%", (bar.get_x() + bar.get_width() / 2, top),
                        ha="center", va="bottom", fontsize=7 if vertical else 8, xytext=(0, 2),
                        textcoords="offset points", rotation=90 if vertical else 0)  # fmt: skip


def plot_shuffle(result: ShuffleResult, path: Path) -> Path:
    """Figure-1 style: accuracy with original, shuffled and reversed frames, all clips and pairs."""
    summary = {ORIGINAL: result.original, SHUFFLED: result.shuffled, REVERSED: result.reversed}
    groups = [("all test clips", "top1"), ("nearly-symmetric pairs", "pair_top1")]
    fig = new_figure(6.4, 4.0)
    ax = fig.subplots()
    x = np.arange(len(groups))
    width = 0.26
    for i, order in enumerate((ORIGINAL, SHUFFLED, REVERSED)):
        if order == SHUFFLED and not result.permutations:
            continue
        stats = [getattr(summary[order], k) for _, k in groups]
        values = [plotted(v.mean if order == SHUFFLED else v) for v in stats]
        errors = [plotted(v.std) for v in stats] if order == SHUFFLED else None
        label = f"shuffled (mean ± {STD_NAME} of {result.permutations})" if order == SHUFFLED else order
        bars = ax.bar(x + (i - 1) * width, values, width, yerr=errors, capsize=3, label=label,
                      color=ORDER_COLOURS[order])  # fmt: skip
        _label_bars(ax, bars, values, above=errors)
    ax.set_xticks(x, [g for g, _ in groups])
    ax.set_ylim(0, 1.3)
    ax.set_ylabel("test accuracy (top-1)")
    ax.set_title(f"{result.probe}: test accuracy by frame order")
    ax.legend(loc="upper center", ncol=3, fontsize=8)
    fig.savefig(path)
    return Path(path)


def _errors(rows: list[ComparisonRow], key: str, spread: dict[str, dict] | None) -> list[float] | None:
    """Each row's std of `key` over seeds (None without seeds)."""
    if not spread:
        return None
    return [plotted(spread.get(r.probe, {}).get(key)) for r in rows]


def plot_accuracy_vs_params(rows: list[ComparisonRow], path: Path, spread: dict[str, dict] | None = None) -> Path:
    """Accuracy (all clips and nearly-symmetric pairs) against trainable parameters, log x;
    with `spread` (std over seeds per probe and key) the points carry error bars."""
    fig = new_figure(6.4, 4.2)
    ax = fig.subplots()
    # a probe with nothing to train (knn) sits at 1 on the log axis
    params = np.maximum(np.asarray([r.num_params for r in rows], dtype=float), 1)
    for key, label, marker in (("top1", "test top-1", "o"), ("pair_top1", "nearly-symmetric pairs", "^")):
        ax.errorbar(params, [plotted(getattr(r, key)) for r in rows], yerr=_errors(rows, key, spread), fmt=marker,
                    markersize=7, capsize=3, label=label)  # fmt: skip
    for i, r in enumerate(sorted(rows, key=lambda r: (r.num_params, plotted(r.top1)))):
        ax.annotate(r.probe, (max(r.num_params, 1), plotted(r.top1)), xytext=(6, 5 if i % 2 else -11),
                    textcoords="offset points", fontsize=8)  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title("Accuracy vs. trainable parameters per probe")
    ax.legend(fontsize=8)
    fig.savefig(path)
    return Path(path)


def plot_order_sensitivity(rows: list[ComparisonRow], path: Path, spread: dict[str, dict] | None = None) -> Path:
    """Per probe: accuracy with frames ordered, shuffled and reversed (Figure 1 for every probe);
    with `spread` the bars carry the std over seeds."""
    fig = new_figure(max(6.4, 1.3 * len(rows) + 2), 4.2)
    axes = fig.subplots(1, 2, sharey=True)
    x = np.arange(len(rows))
    width = 0.26
    panels = (("all test clips", ""), ("nearly-symmetric pairs", "pair_"))
    for ax, (panel, prefix) in zip(axes, panels, strict=True):
        for i, order in enumerate((ORIGINAL, SHUFFLED, REVERSED)):
            field = f"{prefix}top1" if order == ORIGINAL else f"{order}_{prefix}top1"
            values = [plotted(getattr(r, field)) for r in rows]
            errors = _errors(rows, field, spread)
            bars = ax.bar(x + (i - 1) * width, values, width, yerr=errors, capsize=2, label=order,
                          color=ORDER_COLOURS[order])  # fmt: skip
            _label_bars(ax, bars, values, vertical=len(rows) > 2, above=errors)
        ax.set_xticks(x, [r.probe for r in rows], rotation=20)
        ax.set_title(panel, fontsize=10)
        ax.set_ylim(0, 1.18)
    axes[0].set_ylabel("test accuracy (top-1)")
    axes[1].legend(loc="upper right", ncol=3, fontsize=7)
    fig.suptitle("Ordered vs. shuffled vs. reversed frames, per probe")
    fig.savefig(path)
    return Path(path)


def plot_confusion(confusion: list[list[int]], class_names: list[str], pairs: list, title: str, path: Path) -> Path:
    """Row-normalised confusion matrix; red boxes mark each class's nearly-symmetric partner cell."""
    from matplotlib.patches import Rectangle  # deferred: matplotlib takes a second to import; only plots need it

    matrix = np.asarray(confusion, dtype=float)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    n = len(class_names)
    # cells are labelled up to LABELLED_CLASSES; past that the figure stops growing (at SSv2's 174
    # classes it would be about 9000 pixels square and take gigabytes to draw)
    size = max(5.0, 0.45 * min(n, LABELLED_CLASSES) + 2.5)
    fig = new_figure(size + 1, size)
    ax = fig.subplots()
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the true class")
    index = {name: i for i, name in enumerate(class_names)}
    for a, b in pairs:
        for r, c in ((index[a], index[b]), (index[b], index[a])):
            ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.8))
    if n <= LABELLED_CLASSES:
        for r in range(n):
            for c in range(n):
                if matrix[r, c]:
                    colour = "white" if rates[r, c] > 0.6 else "black"
                    ax.text(c, r, int(matrix[r, c]), ha="center", va="center", fontsize=7, color=colour)
        ax.set_xticks(range(n), class_names, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), class_names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{title}\n(red boxes: nearly-symmetric partner class)", fontsize=10)
    fig.savefig(path)
    return Path(path)
