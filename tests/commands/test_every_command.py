"""Every command, walked over click's command tree (a new command joins by existing): its output
pointed at a file, under a file, into a read-only file system, at an immutable folder and at a
folder holding another study; its cache, run or comparison argument at a file, an empty folder
and a damaged one (a truncated HDF5 shard, truncated weights, a truncated comparison.json). Each
case is one line on stderr, exit 2 (or the command's documented code), no traceback, and nothing
written anywhere in the workspace.

The read-only places are real: a tmpfs mounted read-only (EROFS) and a folder made immutable with
`chattr +i` (EPERM even for root, which a `chmod` would not stop); as another user, a folder
without write permission stands in for both. A place that cannot be made on this machine skips
its cases, naming why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import TINY_BACKBONE, TINY_IMAGE_SIZE, error_line, write_synthetic_cache

from stepcli.cli import cli

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass(frozen=True)
class Workspace:
    """Real inputs, each made once: a cache, a run trained on it, a comparison of it, their damaged
    copies, and the bad places an output or input can be pointed at."""

    root: Path
    cache: Path
    run: Path
    compare: Path
    video: Path
    bad: dict[str, Path]  # case name -> path


Args = Callable[[Workspace, Path], list]

#: per command and role, the arguments with that role's path in them (every other argument valid).
#: Roles: out (where it writes), cache, run, compare (what it reads). A command that reads and
#: writes no folder maps to {}; a command missing from this table fails the walk.
WALK: dict[str, dict[str, Args]] = {
    "extract": {
        "out": lambda w, p: [
            "--dataset",
            "demo",
            "--size",
            "4",
            "--root",
            w.root / "videos",
            "--backbone",
            TINY_BACKBONE,
            "--image-size",
            TINY_IMAGE_SIZE,
            "--workers",
            "0",
            "--out",
            p,
        ],
    },  # fmt: skip
    "inspect": {"cache": lambda w, p: [p]},
    "verify": {"cache": lambda w, p: [p]},
    "pairs": {
        "out": lambda w, p: ["--from-run", w.run, "--out", p],
        "run": lambda w, p: ["--from-run", p],
        "cache": lambda w, p: ["--from-run", w.run, "--cache", p],
    },
    "train-probe": {
        "out": lambda w, p: ["--cache", w.cache, "--probe", "linear", "--epochs", "1", "--out", p],
        "cache": lambda w, p: ["--cache", p, "--probe", "linear", "--epochs", "1", "--out", w.root / "new-run"],
    },
    "predict": {"run": lambda w, p: ["--run", p, w.video]},
    "shuffle-test": {
        "out": lambda w, p: ["--run", w.run, "--permutations", "1", "--out", p],
        "run": lambda w, p: ["--run", p, "--permutations", "1"],
        "cache": lambda w, p: ["--run", w.run, "--cache", p, "--permutations", "1", "--out", w.root / "new-shuffle"],
    },
    "evaluate": {
        "out": lambda w, p: ["--run", w.run, "--cache", w.cache, "--out", p],
        "run": lambda w, p: ["--run", p, "--cache", w.cache, "--out", w.root / "new-evaluation"],
        "cache": lambda w, p: ["--run", w.run, "--cache", p, "--out", w.root / "new-evaluation"],
    },
    "compare": {
        "out": lambda w, p: [
            "--cache",
            w.cache,
            "--probes",
            "linear",
            "--epochs",
            "1",
            "--permutations",
            "1",
            "--out",
            p,
        ],
        "cache": lambda w, p: ["--cache", p, "--probes", "linear", "--epochs", "1", "--out", w.root / "new-compare"],
    },  # fmt: skip
    "frames": {
        "out": lambda w, p: ["--compare", w.compare, "--out", p],
        "compare": lambda w, p: ["--compare", p, "--out", w.root / "new-frames"],
        "cache": lambda w, p: ["--compare", w.compare, "--cache", p, "--out", w.root / "new-frames"],
    },
    "demo": {
        "out": lambda w, p: [
            "--out",
            p,
            "--quick",
            "--backbone",
            TINY_BACKBONE,
            "--image-size",
            TINY_IMAGE_SIZE,
            "--workers",
            "0",
        ],
    },  # fmt: skip
    "report": {
        "out": lambda w, p: [w.compare, "--out", p],
        "compare": lambda w, p: [p, "--out", w.root / "new-report"],
    },
    "backbones": {},  # describes models built on the meta device: reads no folder, writes nothing
}

#: the cases of each role: a name of `Workspace.bad`
CASES = {
    "out": ["file", "under-a-file", "read-only-fs", "immutable", "another-study"],
    "cache": ["file", "empty", "truncated-shard"],
    "run": ["file", "empty", "truncated-weights"],
    "compare": ["file", "empty", "truncated-table"],
}
#: cases whose documented answer is another exit status: verify reports a damaged cache's problems
#: one per line and exits 1
CODES = {("verify", "truncated-shard"): 1}
#: click's words for a command line it cannot parse: a walk case that gets one tests nothing
USAGE = ("No such option", "unexpected extra argument", "Missing option", "Missing argument", "Invalid value")


def _mount_read_only(path: Path) -> bool:
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


def _immutable(path: Path) -> bool:
    path.mkdir()
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True) if shutil.which("chattr") else None
    return done is not None and done.returncode == 0


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    root = tmp_path_factory.mktemp("walk")
    labels, splits = [], []
    for label in range(3):
        for split, n in (("train", 4), ("val", 2), ("test", 2)):
            labels += [label] * n
            splits += [split] * n
    cache = write_synthetic_cache(root / "cache", labels, splits, ["open", "close", "push"])
    run, compare = root / "run", root / "compare"
    for args in (
        ["train-probe", "--cache", cache, "--probe", "linear", "--epochs", "1", "--out", run],
        ["compare", "--cache", cache, "--probes", "linear", "--epochs", "1", "--permutations", "1", "--out", compare],
    ):
        result = CliRunner().invoke(cli, [str(a) for a in args])
        assert result.exit_code == 0, result.output
    bad = {"file": root / "a-file.txt", "empty": root / "empty"}
    bad["file"].write_text("not a folder\n")
    bad["empty"].mkdir()
    bad["under-a-file"] = bad["file"] / "out"
    bad["another-study"] = cache  # a cache is another study for every command but extract (see below)
    bad["another-study-for-a-cache"] = run
    bad["truncated-shard"] = root / "truncated-cache"
    shutil.copytree(cache, bad["truncated-shard"])
    shard = sorted(bad["truncated-shard"].rglob("*.h5"))[0]
    os.truncate(shard, shard.stat().st_size // 2)
    bad["truncated-weights"] = root / "truncated-run"
    shutil.copytree(run, bad["truncated-weights"])
    weights = bad["truncated-weights"] / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    bad["truncated-table"] = root / "truncated-compare"
    shutil.copytree(compare, bad["truncated-table"], ignore=shutil.ignore_patterns("runs"))
    table = bad["truncated-table"] / "comparison.json"
    os.truncate(table, table.stat().st_size // 2)
    video = root / "clip.mp4"  # never decoded: every case fails on the run first
    video.write_bytes(b"")
    if os.geteuid() != 0:  # without root, a folder without write permission is read-only for real
        for name in ("read-only-fs", "immutable"):
            bad[name] = root / name
            bad[name].mkdir(mode=0o555)
    else:
        if _mount_read_only(root / "read-only-fs"):
            bad["read-only-fs"] = root / "read-only-fs" / "out"
        if _immutable(root / "immutable"):
            bad["immutable"] = root / "immutable"
    yield Workspace(root, cache, run, compare, video, bad)
    if (root / "read-only-fs").is_mount():
        subprocess.run(["umount", str(root / "read-only-fs")], check=True)
    if "immutable" in bad and os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(bad["immutable"])], check=True)


def _cases() -> list[tuple[str, str, str]]:
    """(command, role, case) for every command of the tree; a command without a WALK entry is one
    failing case, so that a new command cannot slip past the walk."""
    cases = []
    for name in sorted(cli.commands):
        if name not in WALK:
            cases.append((name, "missing", "missing"))
            continue
        cases += [(name, role, case) for role in WALK[name] for case in CASES[role]]
    return cases


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under `root` with its size and modification time, and every folder (what "nothing
    written" compares; a folder's own time moves with the output check's probe file, made and removed)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else (0, 0)
            for p in root.rglob("*")}  # fmt: skip


def test_the_walk_knows_every_command_and_nothing_else() -> None:
    assert set(WALK) == set(cli.commands)


@pytest.mark.parametrize("command,role,case", _cases(), ids=["-".join(c) for c in _cases()])
def test_a_bad_place_is_one_line_before_any_work(workspace: Workspace, command: str, role: str, case: str) -> None:
    assert role != "missing", f"stepcli {command} is not in WALK: say how to point its output and inputs"
    key = "another-study-for-a-cache" if (command, case) == ("extract", "another-study") else case
    if key not in workspace.bad:
        pytest.skip(f"{case}: this machine cannot make one (no mount or chattr here)")
    args = [str(a) for a in WALK[command][role](workspace, workspace.bad[key])]
    before = _snapshot(workspace.root)
    result = CliRunner().invoke(cli, [command, *args])
    assert isinstance(result.exception, SystemExit), f"{command} {args}: {result.exception!r}"
    assert result.exit_code == CODES.get((command, case), 2), result.output
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert not result.stdout.strip(), result.stdout
        line = error_line(result.stderr)
        assert not any(usage in line for usage in USAGE), line  # the case itself must be a valid command
        assert str(workspace.bad[key].name) in line or role != "out", line  # it names the place
    assert _snapshot(workspace.root) == before, f"stepcli {command} {' '.join(args)} wrote something"
