"""report.html: one self-contained page per study. Read here as HTML, and in a real headless browser
(Chromium through Playwright): no console errors, every image loads, the table is comparison.md's."""

from __future__ import annotations

import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import check_reproduce, ok

from stepcli.probe.studies.page import REPORT

CHROMIUM = Path(os.environ.get("STEPCLI_CHROMIUM", "/usr/bin/chromium"))


def md_cells(markdown: str) -> list[list[str]]:
    """Every row of the Markdown tables, header included, separator rows left out."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in markdown.splitlines()
            if line.lstrip().startswith("|")]  # fmt: skip
    return [r for r in rows if not all(set(c) <= set(":- ") for c in r)]


class _Table(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.images: list[str] = []
        self.cell: list[str] | None = None
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.cell = []
        elif tag == "img":
            self.images.append(attrs.get("src", ""))
        for key in ("src", "href"):
            if attrs.get(key) and not attrs[key].startswith("data:"):
                self.external.append(attrs[key])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


@pytest.fixture(scope="module")
def shuffle_study(demo_study, tmp_path_factory) -> Path:
    """`shuffle-test` of the demo's linear run into a folder of its own (the demo study is only read)."""
    out = tmp_path_factory.mktemp("shuffle-page") / "shuffle"
    ok("shuffle-test", "--run", demo_study / "compare" / "runs" / "linear", "--out", out, "--permutations", 2)
    return out


#: each study's page and the Markdown file its table must repeat
PAGES = {"compare": ("compare", "comparison.md"), "shuffle-test": (None, "results.md")}


def _study(name: str, demo_study: Path, shuffle_study: Path) -> tuple[Path, Path]:
    folder, table = PAGES[name]
    study = demo_study / folder if folder else shuffle_study
    return study, study / table


@pytest.mark.slow
@pytest.mark.parametrize("name", PAGES)
def test_report_page_is_self_contained_and_holds_its_md_table(name, demo_study, shuffle_study) -> None:
    study, table = _study(name, demo_study, shuffle_study)
    parsed = _Table()
    parsed.feed((study / REPORT).read_text())
    assert parsed.rows == md_cells(table.read_text())
    assert len(parsed.images) == len(list(study.glob("*.png"))) and all(
        s.startswith("data:image/png;base64,") for s in parsed.images
    )
    assert parsed.external == []  # nothing beside the page is needed
    assert "random-init" in (study / REPORT).read_text()  # the provenance: the backbone's weights


@pytest.mark.slow
def test_report_pages_reproduce_with_config_files_that_exist(demo_study, shuffle_study) -> None:
    # the demo's page: the demo's own config.yaml (its compare/ was run by the demo, not by `compare`)
    assert check_reproduce(demo_study / "compare" / REPORT) == [f"stepcli demo --config {demo_study / 'config.yaml'}"]
    # a shuffle test: the cache's extraction (the demo wrote no extract config.yaml: from the
    # manifest), the run's training (its config.yaml, written by the demo), the test itself
    extract, train, shuffle = check_reproduce(shuffle_study / REPORT)
    assert extract.startswith("stepcli extract --dataset demo") and "--backbone" in extract
    run = demo_study / "compare" / "runs" / "linear"
    assert (train, shuffle) == (f"stepcli train-probe --config {run / 'config.yaml'}",
                                f"stepcli shuffle-test --config {shuffle_study / 'config.yaml'}")  # fmt: skip


def _browser():
    if shutil.which(str(CHROMIUM)) is None:
        pytest.skip(f"browser test skipped: no Chromium at {CHROMIUM} (apt-get install -y chromium; .ci/run does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser test skipped: playwright is not installed (pip install playwright; .ci/run does)")
    return sync_playwright


@pytest.mark.slow
def test_report_pages_in_a_headless_browser(demo_study, shuffle_study, tmp_path) -> None:
    sync_playwright = _browser()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        for name in PAGES:
            study, table = _study(name, demo_study, shuffle_study)
            errors: list[str] = []
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("console", lambda m, errors=errors: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
            page.goto((study / REPORT).as_uri())
            page.wait_for_load_state("load")
            images = page.eval_on_selector_all("img", "els => els.map(e => e.complete && e.naturalWidth > 0)")
            rows = page.eval_on_selector_all(
                "#table tr", "rows => rows.map(r => [...r.children].map(c => c.textContent.trim()))"
            )
            page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
            page.close()
            assert errors == [], name
            assert images and all(images), name
            assert rows == md_cells(table.read_text()), name
            assert (tmp_path / f"{name}.png").stat().st_size > 10_000
        browser.close()
