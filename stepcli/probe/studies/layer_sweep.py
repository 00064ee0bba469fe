"""`stepcli compare --layers`: the comparison once per cached layer, and one table and plot across layers.

DINOv2 probes its last blocks and AIM picks the best of six layers; a cache extracted with
`--layers -1,-4,-7` holds them all, so the question "which layer?" costs a probe sweep, not another
extraction. Each layer's comparison is an ordinary one in OUT/layer<L>/ (and resumes like one);
`layers.md/.csv/.json` and `layers.png` put val top-1, test top-1 and the reversal flip rate of
every probe side by side per layer. Choosing a layer by its test number would be choosing on test:
each probe's layer is selected on val (ties: the earlier layer listed), and its test top-1 there is
the number to report.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from pathlib import Path

from stepcli.cache.format import Manifest
from stepcli.cache.reader import FeatureCache
from stepcli.errors import StepcliError
from stepcli.files import write_atomic
from stepcli.outputs import check_out
from stepcli.probe.studies.compare import CompareConfig, config_record, run_compare
from stepcli.probe.studies.figures import new_figure
from stepcli.probe.studies.page import Page, provenance, reproduce, write_page
from stepcli.probe.studies.report import fmt, markdown_table
from stepcli.probe.studies.results import ComparisonRow

KEYS = (("val_top1", "val top-1"), ("top1", "test top-1"), ("reversed_flip_rate", "reversal flip rate"))


def select_layer(rows: dict[int, list[ComparisonRow]], probe: str) -> int:
    """The layer of best val top-1 for `probe` (ties: the earlier layer in `rows`)."""
    vals = {layer: next(r.val_top1 for r in found if r.probe == probe) or 0.0 for layer, found in rows.items()}
    return max(vals, key=lambda layer: (vals[layer], -list(rows).index(layer)))


def sweep_layers(cache: Path, layers: str) -> tuple[int, ...]:
    """`all` or a comma-separated subset of the layers the cache holds; anything else is a one-line error."""
    held = Manifest.load(cache).extraction.layers
    if layers == "all":
        return held
    try:
        chosen = tuple(int(part) for part in layers.split(","))
    except ValueError:
        raise StepcliError(f"--layers {layers!r}: give all or a comma-separated list such as -1,-4") from None
    missing = [layer for layer in chosen if layer not in held]
    if missing:
        raise StepcliError(f"--layers: cache {cache} holds layers {','.join(map(str, held))}, not {missing[0]}")
    return chosen


def run_layer_sweep(cfg: CompareConfig, layers: str) -> dict[str, Path]:
    """Compare every probe on each chosen layer into OUT/layer<L>; write the per-layer table and plot."""
    check_out(cfg.out, "layer study")
    rows: dict[int, list[ComparisonRow]] = {}
    cache = FeatureCache(cfg.cache, layer=cfg.layer)
    commands = reproduce(cache, "compare", cfg.out)  # each layer's page: the whole study's
    for layer in sweep_layers(Path(cfg.cache), layers):
        rows[layer] = run_compare(
            replace(cfg, out=Path(cfg.out) / f"layer{layer}", train=replace(cfg.training, layer=layer)), commands
        ).rows
    paths = write_layer_outputs(Path(cfg.out), rows)
    page = Page(
        title=f"stepcli compare --layers: {len(rows)} layers on {cache.manifest.dataset.name}",
        markdown=paths["md"].read_text(), plots={"layers": paths["png"]},
        config={"compare": config_record(cfg), "layers": list(rows)}, commands=commands,
        provenance=provenance(cache, Path(next(iter(rows.values()))[0].run)) | {"layer": ", ".join(map(str, rows))},
    )  # fmt: skip
    paths["html"] = write_page(Path(cfg.out), page)
    return paths


def write_layer_outputs(out: Path, rows: dict[int, list[ComparisonRow]]) -> dict[str, Path]:
    """layers.md (a row per probe, top-1 and reversal flip rate per layer), .csv, .json and layers.png."""
    probes = [row.probe for row in next(iter(rows.values()))]
    by = {(layer, row.probe): row for layer, found in rows.items() for row in found}
    chosen = {p: select_layer(rows, p) for p in probes}
    header = ["probe", "layer (on val)", "its test top-1"] + [
        f"{label} @ {layer}" for _, label in KEYS for layer in rows
    ]
    table = [
        [p, str(chosen[p]), fmt(by[chosen[p], p].top1, "pct")]
        + [fmt(getattr(by[layer, p], key), "pct") for key, _ in KEYS for layer in rows]
        for p in probes
    ]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["probe", "layer", *(key for key, _ in KEYS), "selected_on_val"])
    writer.writerows([[p, layer, *(getattr(by[layer, p], key) for key, _ in KEYS), int(layer == chosen[p])]
                      for p in probes for layer in rows])  # fmt: skip
    paths = {ext: out / f"layers.{ext}" for ext in ("md", "csv", "json")}
    note = "\nEach probe's layer is selected on val top-1 (ties: the earlier layer); report its test top-1.\n"
    write_atomic(paths["md"], markdown_table(header, table) + note)
    write_atomic(paths["csv"], buffer.getvalue())
    record = {"layers": {str(k): [r.result_dict(out) for r in v] for k, v in rows.items()},
              "selected_on_val": {p: {"layer": chosen[p], "val_top1": by[chosen[p], p].val_top1,
                                      "test_top1": by[chosen[p], p].top1} for p in probes}}  # fmt: skip
    write_atomic(paths["json"], json.dumps(record, indent=2))
    paths["png"] = plot_layers(rows, probes, by, out / "layers.png")
    return paths


def plot_layers(rows: dict, probes: list[str], by: dict, path: Path) -> Path:
    """One panel per key; each probe's layer selected on val is ringed in every panel."""
    fig = new_figure(4.0 * len(KEYS), 3.2)
    layers = list(rows)
    for ax, (key, label) in zip(fig.subplots(1, len(KEYS)), KEYS, strict=True):
        for probe in probes:
            values = [100 * (getattr(by[layer, probe], key) or 0.0) for layer in layers]
            (line,) = ax.plot(range(len(layers)), values, marker="o", label=probe)
            at = layers.index(select_layer(rows, probe))
            ax.plot([at], [values[at]], marker="o", markersize=11, fillstyle="none", color=line.get_color())
        ax.set_xticks(range(len(layers)), [str(layer) for layer in layers])
        ax.set_xlabel("layer")
        ax.set_ylabel(f"{label} (%)")
        ax.set_ylim(0, 100)
    fig.axes[0].legend(fontsize=7)
    fig.savefig(path)
    return path
