"""report.html: one self-contained page per study. Read here as HTML, and in a real headless browser
(Chromium through Playwright): no console errors, every image loads, the table is comparison.md's."""

from __future__ import annotations

import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

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


@pytest.mark.slow
def test_report_page_is_self_contained_and_holds_comparison_md(demo_study) -> None:
    study = demo_study / "compare"
    parsed = _Table()
    parsed.feed((study / REPORT).read_text())
    assert parsed.rows == md_cells((study / "comparison.md").read_text())
    assert len(parsed.images) == len(list(study.glob("*.png"))) and all(
        s.startswith("data:image/png;base64,") for s in parsed.images
    )
    assert parsed.external == []  # nothing beside the page is needed
    text = (study / REPORT).read_text()
    assert "stepcli compare --config" in text and "stepcli extract --dataset demo" in text and "random-init" in text


def _browser():
    if shutil.which(str(CHROMIUM)) is None:
        pytest.skip(f"browser test skipped: no Chromium at {CHROMIUM} (apt-get install -y chromium; .ci/run does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser test skipped: playwright is not installed (pip install playwright; .ci/run does)")
    return sync_playwright


@pytest.mark.slow
def test_report_page_in_a_headless_browser(demo_study, tmp_path) -> None:
    sync_playwright = _browser()
    study = demo_study / "compare"
    expected = md_cells((study / "comparison.md").read_text())
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((study / REPORT).as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all("img", "els => els.map(e => e.complete && e.naturalWidth > 0)")
        rows = page.eval_on_selector_all(
            "#table tr", "rows => rows.map(r => [...r.children].map(c => c.textContent.trim()))"
        )
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert errors == []
    assert images and all(images)
    assert rows == expected
    assert (tmp_path / "report.png").stat().st_size > 10_000
