"""The README and the docs/ pages against the repository: every repository path they name exists,
the README stays short, every page is in the MkDocs nav, and every command block marked for the
suite runs through the CLI on a small cache.

A block is marked by an HTML comment alone on the line before it (neither GitHub nor MkDocs
shows it): ``<!-- runs in the suite -->``, or ``<!-- runs in the suite (slow) -->`` for blocks
that the fast loop leaves out. Each ``stepcli`` line of a marked block runs in a scratch folder
where ``cache/demo`` and ``C`` are a copy of the suite's small demo cache and ``video1.mp4``,
``video2.mp4`` two of its videos; ``> FILE`` at the end of a line writes the output to FILE; an
``extract`` runs in a folder of its own.
"""

from __future__ import annotations

import importlib
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import invoke

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"
README_MAX_LINES = 250

MARKERS = {"<!-- runs in the suite -->": "fast", "<!-- runs in the suite (slow) -->": "slow"}
# folders and top-level files whose names are always repository paths, whether they exist or not
CHECKED_DIRS = {"stepcli", "tests", "bench", "docs", "recipes", ".ci"}
CHECKED_FILES = {"Makefile", "constraints.txt", "pyproject.toml", "mkdocs.yml", "README.md", ".gitignore"}
FENCE = re.compile(r"^(\s*)(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
DOTTED = re.compile(r"\bstepcli(?:\.[A-Za-z_]\w*)+")
STRIP = "()[]\"',;:."


def pages() -> list[Path]:
    """README.md, then every docs page."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def tracked_top_level() -> tuple[set[str], set[str]]:
    """The repository's own top-level folders and files: what git tracks (ignored outputs such as
    .venv, site or demo-output are not the repository's), plus the names always checked."""
    dirs, files = set(CHECKED_DIRS), set(CHECKED_FILES)
    try:
        listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return dirs, files
    for line in listed.splitlines():
        head, sep, _ = line.partition("/")
        (dirs if sep else files).add(head)
    return dirs, files


@dataclass
class Parsed:
    """A Markdown file split into prose (code spans still in it) and its fenced blocks."""

    prose: list[tuple[int, str]]  # (line number, text) outside fences
    blocks: list[tuple[int, list[str], str | None]]  # (first line, lines, marker kind or None)


def parse(path: Path) -> Parsed:
    lines = path.read_text().splitlines()
    prose, blocks = [], []
    marker, i = None, 0
    while i < len(lines):
        line = lines[i]
        if FENCE.match(line):
            start, body, i = i + 1, [], i + 1
            while i < len(lines) and not FENCE.match(lines[i]):
                body.append(lines[i])
                i += 1
            blocks.append((start, body, marker))
            marker, i = None, i + 1
            continue
        if line in MARKERS:
            marker = MARKERS[line]
        elif line.strip() and marker is not None:
            raise AssertionError(f"{path.name}:{i + 1}: a suite marker must stand right before a code block")
        else:
            prose.append((i + 1, line))
        i += 1
    assert marker is None, f"{path.name}: a suite marker at the end, with no code block after it"
    return Parsed(prose, blocks)


def candidates(path: Path) -> list[tuple[int, str, str]]:
    """(line, token, kind) for everything that may name a repository path: the words of code spans
    and code blocks ('code'), and link and image targets ('link')."""
    found = []
    parsed = parse(path)
    for number, line in parsed.prose:
        for match in CODE_SPAN.finditer(line):
            found += [(number, word, "code") for word in match.group(2).split()]
        found += [(number, match.group(1), "link") for match in LINK.finditer(line)]
    for start, body, _ in parsed.blocks:
        for offset, line in enumerate(body):
            found += [(start + offset + 1, word, "code") for word in line.split()]
    return found


def exists(relative: str) -> bool:
    """A path inside the repository; `*` and `<placeholder>` match any name."""
    pattern = re.sub(r"<[^>]*>", "*", relative).rstrip("/")
    if "*" in pattern:
        return any(REPO.glob(pattern))
    return (REPO / pattern).exists()


def missing_paths(path: Path) -> list[str]:
    dirs, files = tracked_top_level()
    missing = []
    for number, token, kind in candidates(path):
        where = f"{path.relative_to(REPO)}:{number}: "
        if kind == "link":
            target = token.split("#", 1)[0]
            if not target or re.match(r"^[a-z]+:", target):  # an anchor on the same page, a URL
                continue
            resolved = (path.parent / target).resolve()
            if not resolved.is_relative_to(REPO) or not resolved.exists():
                missing.append(where + token)
            continue
        word = token.strip(STRIP)
        if word.startswith("/") or "://" in word:
            continue
        head, sep, _ = word.partition("/")
        if (sep and head in dirs) or (not sep and word in files):
            if not exists(word):
                missing.append(where + word)
    return missing


def test_every_repository_path_named_exists() -> None:
    """README.md and docs/*.md name only paths the repository has: `stepcli/...`, `tests/...`,
    `bench/...`, `docs/...`, top-level files, links between pages and to figures. A user's path
    (`cache/mine`, `demo-output/...`, `/data/ssv2`) is not under any of the repository's own
    top-level entries and is not checked."""
    missing = [line for page in pages() for line in missing_paths(page)]
    assert not missing, "paths named in the docs that the repository does not have:\n" + "\n".join(missing)


def test_every_stepcli_name_resolves() -> None:
    """Every dotted `stepcli.module.name` a page names is a module or an attribute of one."""
    unresolved = []
    for page in pages():
        for number, token, kind in candidates(page):
            for name in DOTTED.findall(token) if kind == "code" else []:
                parts = name.split(".")
                for cut in range(len(parts), 0, -1):
                    try:
                        target = importlib.import_module(".".join(parts[:cut]))
                    except ImportError:
                        continue
                    try:
                        for attribute in parts[cut:]:
                            target = getattr(target, attribute)
                    except AttributeError:
                        unresolved.append(f"{page.relative_to(REPO)}:{number}: {name}")
                    break
    assert not unresolved, "names in the docs that stepcli does not have:\n" + "\n".join(unresolved)


def test_code_layout_names_existing_modules() -> None:
    """architecture.md's code layout: each entry's path, and every `name.py` its description names
    (relative to the entry's folder), exists."""
    parsed = parse(DOCS / "architecture.md")
    layouts = [(start, body) for start, body, _ in parsed.blocks if body and body[0].startswith("stepcli/")]
    assert layouts, "architecture.md has no code layout block (lines starting with stepcli/...)"
    missing = []
    for start, body in layouts:
        folder = None
        for offset, line in enumerate(body):
            words = line.split()
            if not line.startswith(" "):
                entry = words[0]
                folder = entry.rstrip("/") if entry.endswith("/") else str(Path(entry).parent)
                words = words[1:]
            for word in words:
                word = word.strip(STRIP)
                if re.fullmatch(r"[\w/]+\.py", word) and not (REPO / folder / word).exists():
                    missing.append(f"docs/architecture.md:{start + offset + 1}: {folder}/{word}")
    assert not missing, "modules in the code layout that do not exist:\n" + "\n".join(missing)


def test_readme_is_short() -> None:
    lines = len(README.read_text().splitlines())
    assert lines < README_MAX_LINES, f"README.md has {lines} lines: move reference material to docs/"


def nav_pages(nav) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return []


def test_every_page_is_in_the_nav() -> None:
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    in_nav = nav_pages(config["nav"])
    on_disk = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(set(in_nav)) == on_disk, f"nav {sorted(in_nav)} != pages {on_disk}"
    assert len(in_nav) == len(set(in_nav)), "a page is in the nav twice"


def marked_commands(kind: str) -> list[tuple[str, list[str]]]:
    """(where, argv) for every `stepcli` line of the blocks marked `kind`, README first, then the
    pages in nav order; a command that appears twice runs once."""
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    files = [README, *(DOCS / page for page in nav_pages(config["nav"]))]
    commands, seen = [], set()
    for path in files:
        for start, body, marker in parse(path).blocks:
            if marker != kind:
                continue
            joined = "\n".join(body).replace("\\\n", " ")
            for offset, line in enumerate(joined.splitlines()):
                argv = shlex.split(line, comments=True)
                if not argv:
                    continue
                where = f"{path.relative_to(REPO)}:{start + offset + 1}"
                assert argv[0] == "stepcli", f"{where}: a marked block runs only stepcli commands: {line}"
                if tuple(argv) not in seen:
                    seen.add(tuple(argv))
                    commands.append((where, argv[1:]))
    return commands


def small_workdir(demo_cache: Path, where: Path) -> Path:
    """A folder where `cache/demo` and `C` are a copy of the small demo cache, with two of its
    videos as video1.mp4 and video2.mp4."""
    where.mkdir(parents=True)
    shutil.copytree(demo_cache, where / "cache" / "demo")
    (where / "C").symlink_to(Path("cache") / "demo")
    videos = sorted((demo_cache.parent / "demo-videos").rglob("*.mp4"))
    assert len(videos) >= 2, f"the demo cache's videos are not beside it: {demo_cache.parent}"
    for name, video in zip(("video1.mp4", "video2.mp4"), videos[:: max(1, len(videos) // 2)], strict=False):
        shutil.copy(video, where / name)
    return where


def run_marked(commands: list[tuple[str, list[str]]], workdir: Path, monkeypatch) -> None:
    for where, argv in commands:
        if argv[0] == "extract":
            folder = workdir.parent / f"extract-{len(list(workdir.parent.glob('extract-*')))}"
            folder.mkdir()
            monkeypatch.chdir(folder)
        else:
            monkeypatch.chdir(workdir)
        output = None
        if ">" in argv:
            argv, output = argv[: argv.index(">")], argv[argv.index(">") + 1]
        result = invoke(*argv)
        assert result.exit_code == 0, f"{where}: stepcli {shlex.join(argv)}\n{result.output}{result.exception!r}"
        if output is not None:
            Path(output).write_text(result.stdout)


def test_marked_commands_run(demo_cache, tmp_path, monkeypatch, one_thread) -> None:
    """The worked examples of the README and the pages run as written on the small demo cache."""
    commands = marked_commands("fast")
    assert len(commands) >= 5, commands
    run_marked(commands, small_workdir(demo_cache, tmp_path / "small"), monkeypatch)


@pytest.mark.slow
def test_marked_slow_commands_run(demo_cache, tmp_path, monkeypatch, one_thread) -> None:
    """The marked blocks too long for the inner loop: an extraction with the default backbone,
    comparisons of many probes or seeds."""
    commands = marked_commands("slow")
    assert commands
    run_marked(commands, small_workdir(demo_cache, tmp_path / "small"), monkeypatch)
