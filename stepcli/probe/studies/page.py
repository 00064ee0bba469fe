"""`report.html`: a study as one self-contained page to open, mail or attach to a paper's notes.

The page holds the study's table exactly as its Markdown file writes it (the same cells, so the
numbers cannot drift), every plot inlined as a data URI (no file beside it is needed, nothing is
fetched), the study's config, the cache's provenance (backbone, weights, layer, frames, views,
dataset, split and leakage counts where the runs record them) and the commands that reproduce
it. No script runs in it.
"""

from __future__ import annotations

import base64
import html
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stepcli.cache.reader import FeatureCache
from stepcli.files import write_atomic
from stepcli.probe.runs.rundir import METRICS, read_run_config
from stepcli.probe.studies.seeds import one_run
from stepcli.version import __version__

REPORT = "report.html"
#: the resolved options a command writes beside its outputs (`commands/configfile.py`)
CONFIG_YAML = "config.yaml"
_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: 0.5rem; vertical-align: top; }
figure img { max-width: 34rem; border: 1px solid #eee; }
pre { background: #f6f6f6; padding: 0.8rem; overflow-x: auto; font-size: 0.85rem; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2rem 1rem; }
dt { font-weight: 600; }
"""


@dataclass(frozen=True)
class Page:
    """What a study's report.html shows."""

    title: str
    markdown: str  # the study's table, as its .md file holds it
    plots: dict[str, Path]
    config: dict[str, Any]
    provenance: dict[str, str] = field(default_factory=dict)
    commands: tuple[str, ...] = ()


def provenance(cache: FeatureCache, run_dir: Path | None = None) -> dict[str, str]:
    """The cache's provenance, and a run's split (and leakage, when its metrics.json has them) counts
    (`run_dir`: a run, or a comparison row's directory of seed runs)."""
    extraction, dataset = cache.manifest.extraction, cache.manifest.dataset
    views = extraction.views
    rows = {
        "cache": str(cache.path.resolve()),
        "backbone": extraction.backbone,
        "weights": extraction.weights,
        "layer": str(cache.layer),
        "frames": f"{extraction.num_frames} per clip ({extraction.sampler})",
        "image size": f"{extraction.image_size} px",
        "views": f"{views.clips} temporal x {views.crops} spatial, {views.train_views} augmented train views",
        "tokens": f"P={extraction.num_prefix} + N={extraction.num_patches}, D={extraction.dim}",
        "dataset": f"{dataset.name}, {len(dataset.class_names)} classes, {len(cache.clip_ids)} clips",
    }
    if run_dir is not None:
        run_dir = one_run(Path(run_dir))  # a row over seeds: its lowest seed's run
        config = read_run_config(run_dir)
        rows["splits"] = ", ".join(f"{k} {v}" for k, v in sorted(config.splits.counts.items()))
        rows["split source"] = config.splits.source
        metrics_path = Path(run_dir) / METRICS
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        for key, value in sorted(metrics.items()):  # issue 26's leakage counts, where the run records them
            if "leak" in key:
                rows[key.replace("_", " ")] = json.dumps(value) if not isinstance(value, str) else value
    return rows


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _numeric(text: str) -> bool:
    return bool(text) and (text[0].isdigit() or text[0] in "-+−." or text.endswith("%"))


def markdown_html(text: str) -> str:
    """A study's Markdown (headings, paragraphs, pipe tables) as HTML; each table cell's text kept as written."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("|"):
            block = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                block.append(lines[i])
                i += 1
            head, body = _cells(block[0]), [_cells(b) for b in block[2:]]
            row = "".join(f'<th class="{"num" if j else ""}">{html.escape(c)}</th>' for j, c in enumerate(head))
            rows = [f"<tr>{row}</tr>"]
            for cells in body:
                tds = "".join(f'<td class="{"num" if _numeric(c) else ""}">{html.escape(c)}</td>' for c in cells)
                rows.append(f"<tr>{tds}</tr>")
            out.append("<table>\n" + "\n".join(rows) + "\n</table>")
            continue
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 1, 4)
            out.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{html.escape(line.strip())}</p>")
        i += 1
    return "\n".join(out)


def _image(name: str, path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    alt = html.escape(name.replace("_", " "))
    return f'<figure><img alt="{alt}" src="data:image/png;base64,{data}"><figcaption>{alt}</figcaption></figure>'


def render(page: Page) -> str:
    """The page's HTML."""
    facts = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in page.provenance.items())
    commands = "\n".join(page.commands)
    config = json.dumps(page.config, indent=2, default=str)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(page.title)}</title>
<link rel="icon" href="data:,"><style>{_STYLE}</style></head>
<body>
<h1>{html.escape(page.title)}</h1>
<section id="table">{markdown_html(page.markdown)}</section>
<section id="plots"><h2>Plots</h2>{"".join(_image(k, p) for k, p in page.plots.items() if Path(p).is_file())}</section>
<section id="provenance"><h2>Provenance</h2><dl>{facts}</dl></section>
<section id="reproduce"><h2>Reproduce</h2><pre>{html.escape(commands)}</pre></section>
<section id="config"><h2>Config</h2><pre>{html.escape(config)}</pre></section>
<footer><p>stepcli {html.escape(__version__)}</p></footer>
</body></html>
"""


def write_page(out: Path, page: Page) -> Path:
    """OUT/report.html."""
    path = Path(out) / REPORT
    write_atomic(path, render(page))
    return path


def extract_command(cache: FeatureCache) -> str:
    """`stepcli extract` with the options that made the cache's tokens (the dataset's root left to fill in)."""
    e, dataset = cache.manifest.extraction, cache.manifest.dataset
    layers = ",".join(map(str, e.layers)) if len(e.layers) > 1 else None
    options = {
        "--dataset": dataset.name, "--root": "ROOT", "--backbone": e.backbone, "--frames": e.num_frames,
        "--image-size": e.image_size, "--layers" if layers else "--layer": layers or e.layer, "--pool": e.pool,
        "--tokens": e.tokens, "--clips": e.views.clips, "--crops": e.views.crops,
    }  # fmt: skip
    if e.views.train_views:
        options |= {"--train-views": e.views.train_views, "--augment": e.views.augment, "--augment-seed": e.views.seed}
    return (
        "stepcli extract "
        + " ".join(f"{k} {shlex.quote(str(v))}" for k, v in options.items())
        + (f" --out {shlex.quote(str(cache.path.resolve()))}")
    )


def reproduce(cache: FeatureCache, command: str, out: Path, runs: tuple[Path, ...] = ()) -> tuple[str, ...]:
    """The commands that rebuild a study: the cache's extraction (from its config.yaml, where the
    command line wrote one, else its options from the manifest), the training of each run in `runs`
    that the study reads without training it (shuffle-test's run; from the run's config.yaml, where it
    has one) and the study's own run from the config.yaml the command line writes beside this page."""
    cache_config = cache.path / CONFIG_YAML
    extract = f"stepcli extract --config {cache_config.resolve()}" if cache_config.is_file() else extract_command(cache)
    trained = [f"stepcli train-probe --config {(Path(r) / CONFIG_YAML).resolve()}" for r in runs
               if (Path(r) / CONFIG_YAML).is_file()]  # fmt: skip
    return (extract, *trained, f"stepcli {command} --config {(Path(out) / CONFIG_YAML).resolve()}")
