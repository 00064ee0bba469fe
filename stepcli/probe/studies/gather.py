"""`stepcli report DIR...`: many comparisons (one per backbone, per dataset, ...) in one table.

Each DIR is a `compare` output (its comparison.json). The table's rows are probes and its
columns studies (or the reverse), each cell top-1 with its 95% interval, as Markdown, CSV, JSON
and a self-contained HTML page. Numbers side by side are only comparable on the same test clips:
studies whose runs were tested on different clips are refused, in one line.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

from stepcli.errors import StepcliError
from stepcli.files import write_atomic
from stepcli.outputs import check_out
from stepcli.probe.runs.rundir import SPLIT_IDS
from stepcli.probe.studies.page import Page, render
from stepcli.probe.studies.report import markdown_table
from stepcli.probe.studies.results import row_run

COMPARISON = "comparison.json"
BY = ("probes", "studies")  # what the rows are


@dataclass(frozen=True)
class Cell:
    """One probe's test top-1 in one study, with its 95% interval."""

    top1: float | None
    low: float | None = None
    high: float | None = None

    @property
    def text(self) -> str:
        if self.top1 is None:
            return "–"
        interval = f" ({100 * self.low:.1f}–{100 * self.high:.1f})" if self.low is not None else ""
        return f"{100 * self.top1:.1f}%{interval}"


@dataclass(frozen=True)
class Study:
    """One comparison: its name (the directory's), the test clips its runs saw, each probe's cell."""

    name: str
    path: Path
    cache: str
    test_clips: str  # a digest of the sorted test clip ids
    num_test: int
    cells: dict[str, Cell]


def read_study(path: Path) -> Study:
    """A compare output directory as a `Study`; anything else is a one-line error."""
    path = Path(path)
    file = path / COMPARISON
    if not file.is_file():
        raise StepcliError(f"{path} is not a comparison (no {COMPARISON}); give directories made by `stepcli compare`")
    try:
        data = json.loads(file.read_text())
        rows = data["rows"]
        cells = {
            r["probe"]: Cell(r["top1"], *(r.get("top1_ci") or (None, None))) for r in rows
        }  # fmt: skip
        run = row_run(path, rows[0])
    except (json.JSONDecodeError, KeyError, TypeError, IndexError) as err:
        raise StepcliError(f"{file} is not a comparison.json ({type(err).__name__}: {err})") from None
    splits = run / SPLIT_IDS
    if not splits.is_file():  # a study of several seeds: its run directory holds seed-<s> runs
        seeded = sorted(run.glob(f"seed-*/{SPLIT_IDS}"))
        splits = seeded[0] if seeded else splits
    if not splits.is_file():
        raise StepcliError(f"{path}: its run {run} has no {SPLIT_IDS}, so its test clips are unknown")
    test = sorted(json.loads(splits.read_text()).get("test", []))
    digest = hashlib.sha256("\n".join(test).encode()).hexdigest()[:16]
    return Study(path.name, path, str(data.get("cache", "")), digest, len(test), cells)


def _named(studies: list[Study]) -> list[str]:
    """Column names: each directory's name, with its parent's where two names are the same."""
    names = [s.name for s in studies]
    return [f"{s.path.parent.name}/{s.name}" if names.count(s.name) > 1 else s.name for s in studies]


@dataclass(frozen=True)
class Gathered:
    """The table and where its four forms were written."""

    header: list[str]
    rows: list[list[str]]
    paths: dict[str, Path]

    @property
    def markdown(self) -> str:
        return markdown_table(self.header, self.rows)


def gather(dirs: list[Path], out: Path, by: str = "probes") -> Gathered:
    """One table of every study in `dirs`: OUT/report.md, .csv, .json and .html."""
    if by not in BY:
        raise StepcliError(f"--by {by!r}: choose {' or '.join(BY)}")
    if not dirs:
        raise StepcliError("give at least one comparison directory")
    out = check_out(out, "report")
    studies = [read_study(d) for d in dirs]
    first = studies[0]
    for study in studies[1:]:
        if study.test_clips != first.test_clips:
            raise StepcliError(
                f"{study.path} was tested on other clips than {first.path} ({study.num_test} vs {first.num_test} "
                "test clips, different ids): their numbers are not comparable side by side"
            )
    names = _named(studies)
    probes = list(dict.fromkeys(p for s in studies for p in s.cells))
    missing = Cell(None)
    if by == "probes":
        header = ["probe", *names]
        cells = [[s.cells.get(p, missing) for s in studies] for p in probes]
        labels = probes
    else:
        header = ["study", *probes]
        cells = [[s.cells.get(p, missing) for p in probes] for s in studies]
        labels = names
    rows = [[label, *(c.text for c in row)] for label, row in zip(labels, cells, strict=True)]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {ext: out / f"report.{ext}" for ext in ("md", "csv", "json", "html")}
    title = f"stepcli report: {len(studies)} studies, top-1 on {first.num_test} test clips (95% interval)"
    table = markdown_table(header, rows)
    write_atomic(paths["md"], f"# {title}\n\n{table}")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([header[0], *(f"{h} {k}" for h in header[1:] for k in ("top1", "low", "high"))])
    for label, row in zip(labels, cells, strict=True):
        writer.writerow([label, *("" if v is None else v for c in row for v in (c.top1, c.low, c.high))])
    write_atomic(paths["csv"], buffer.getvalue())
    record = {
        "by": by, "columns": header[1:], "test_clips": first.num_test,
        "studies": [{"name": n, "path": str(s.path.resolve()), "cache": s.cache} for n, s in zip(names, studies, strict=True)],
        "rows": {label: {h: vars(c) for h, c in zip(header[1:], row, strict=True)} for label, row in zip(labels, cells, strict=True)},
    }  # fmt: skip
    write_atomic(paths["json"], json.dumps(record, indent=2) + "\n")
    page = Page(
        title=title, markdown=table, plots={}, config=record,
        provenance={n: s.cache for n, s in zip(names, studies, strict=True)},
        commands=("stepcli report " + " ".join(str(s.path.resolve()) for s in studies) + f" --out {out.resolve()}",),
    )  # fmt: skip
    write_atomic(paths["html"], render(page))
    return Gathered(header, rows, paths)
