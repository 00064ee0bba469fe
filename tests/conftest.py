"""Shared fixtures and helpers: a tiny open_clip config registered through open_clip's own config
loader, a small demo cache built by the real extraction pipeline (real videos, real HDF5), and the
checks every CLI error test makes."""

from __future__ import annotations

import html
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import yaml
from click.testing import CliRunner, Result

from stepcli.cli import cli

TESTS = Path(__file__).parent
DATA = TESTS / "data"  # fixtures checked in: a v1 cache, dataset layouts
TINY_CLI = TESTS / "tiny_cli.py"  # `stepcli` with the tiny backbone registered, for child processes
TORCHRUN = Path(sys.executable).parent / "torchrun"
STEPCLI = Path(sys.executable).parent / "stepcli"  # the installed console script

TINY_OPENCLIP = "stepcli-test-vit"
# 2 blocks of width 64: the real open_clip VisionTransformer, small enough for milliseconds per frame
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1},
}
TINY_BACKBONE = f"openclip:{TINY_OPENCLIP}"
TINY_IMAGE_SIZE = 64  # 4x4 patches + CLS = 17 tokens per frame


def register_tiny_openclip(directory: Path) -> None:
    import open_clip

    path = Path(directory) / f"{TINY_OPENCLIP}.json"
    path.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(path)


@pytest.fixture(scope="session", autouse=True)
def tiny_openclip(tmp_path_factory) -> str:
    register_tiny_openclip(tmp_path_factory.mktemp("openclip-config"))
    return TINY_BACKBONE


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def make_demo_cache(out: Path, clips_per_class: int = 4, **overrides):
    """Extract the demo (`clips_per_class` per class) with the tiny backbone into `out`."""
    from stepcli.extract.datasets import DatasetOptions
    from stepcli.extract.pipeline import ExtractConfig, run_extract

    options = DatasetOptions(root=Path(out).parent / "demo-videos", size=clips_per_class)
    settings = {"backbone": TINY_BACKBONE, "image_size": TINY_IMAGE_SIZE, "workers": 0, **overrides}
    return run_extract(ExtractConfig(dataset="demo", out=Path(out), dataset_options=options, **settings))


def invoke(*args: str) -> Result:
    """The CLI in this process, through click's test runner (stderr kept apart from stdout)."""
    return CliRunner().invoke(cli, [str(a) for a in args])


def ok(*args: str) -> Result:
    """Run the CLI expecting success."""
    result = invoke(*args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def error_line(stderr: str) -> str:
    """The one line of a user error on stderr; only warnings printed before it may precede it."""
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("WARNING")]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def fails(*args: str) -> str:
    """Run the CLI expecting a user error: exit 2, one error line on stderr, no exception but the exit.

    Under click's runner a traceback never reaches the output (an exception lands in
    `result.exception`), so that is what this checks; `fails_in_process` checks the real stderr.
    """
    result = invoke(*args)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, result.output
    assert not result.stdout.strip(), result.stdout
    return error_line(result.stderr)


def page_commands(page: Path) -> list[str]:
    """The commands of a report.html's Reproduce section, one a line."""
    section = Path(page).read_text().split('<section id="reproduce">', 1)[1].split("</section>", 1)[0]
    return html.unescape(section.split("<pre>", 1)[1].split("</pre>", 1)[0]).splitlines()


def check_reproduce(page: Path) -> list[str]:
    """Each `stepcli CMD --config FILE` on a report.html names a config.yaml that exists and is CMD's."""
    commands = page_commands(page)
    for line in commands:
        words = shlex.split(line)
        if "--config" in words:
            config = Path(words[words.index("--config") + 1])
            assert config.is_file(), line
            assert yaml.safe_load(config.read_text())["command"] == words[1], line
    return commands


def child_env(**extra: str) -> dict:
    """The environment of a child stepcli: offline, one thread, no launcher variables of ours."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return env | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"} | extra


def fails_in_process(*args: str, script: Path | None = None) -> str:
    """Run the real console script (or `script`, e.g. tiny_cli.py) in a child process expecting a
    user error: exit 2, exactly one line on stderr, no traceback anywhere."""
    command = [str(STEPCLI)] if script is None else [sys.executable, str(script)]
    done = subprocess.run([*command, *map(str, args)], env=child_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    return error_line(done.stderr)


@pytest.fixture(scope="session")
def demo_cache(tiny_openclip, tmp_path_factory) -> Path:
    """A 12-class demo cache (4 clips per class) from the tiny backbone: tests read, never write it."""
    out = tmp_path_factory.mktemp("demo") / "cache"
    make_demo_cache(out)
    return out


@pytest.fixture(scope="module")
def one_thread():
    """Tiny probes on a shared machine: two OpenMP threads only wait for each other."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def cache_tokens(cache_dir: Path) -> dict:
    """`{clip id: tokens [T, P+N, D]}` of a cache with no clip stored twice."""
    from stepcli.cache.reader import FeatureCache

    cache = FeatureCache(cache_dir)
    stored = 0  # rows on disk, read directly rather than through the reader under test
    for path in cache.shard_paths:
        with h5py.File(path, "r") as f:
            stored += len(f["clip_id"])
    assert stored == len(set(cache.clip_ids)), f"{stored} rows in the shards for {len(cache)} distinct clips"
    return {clip_id: cache.tokens([row])[0] for row, clip_id in enumerate(cache.clip_ids)}


def write_synthetic_cache(
    path: Path,
    labels: list[int],
    splits: list[str],
    class_names: list[str],
    seed: int = 0,
    patches: int = 2,
    groups: list[str] | None = None,
):
    """A cache written by the real shard writer from seeded random tokens `[T=4, 1+patches, 8]`, one
    clip per (label, split, group); each class gets its own mean so probes can learn it."""
    import numpy as np

    from stepcli.cache.format import Manifest
    from stepcli.cache.records import DatasetRecord, ExtractionRecord
    from stepcli.cache.writer import ShardWriter

    rng = np.random.default_rng(seed)
    with ShardWriter(path, clips_per_shard=1000) as writer:
        for i, (label, split) in enumerate(zip(labels, splits, strict=True)):
            tokens = rng.normal(0, 0.3, (4, 1 + patches, 8)) + np.eye(8)[label % 8]
            # one layer, one view: tokens [K=1, T, P+N, D], frame index and timestamps [K=1, T]
            group = groups[i] if groups else ""
            writer.add(f"clip-{i:04d}", label, split, [tokens[None]], np.arange(4)[None], np.arange(4)[None] / 8.0,
                       group=group)  # fmt: skip
    extraction = ExtractionRecord(
        backbone="synthetic", weights="none", image_size=0, mean=(0.0,), std=(1.0,), resize="none", normalize="none",
        layer=-1, num_frames=4, sampler="all", dtype="float16", num_prefix=1, num_patches=patches, dim=8,
    )  # fmt: skip
    used = tuple(sorted({s for s in splits if s}))
    Manifest(extraction=extraction, dataset=DatasetRecord("synthetic", tuple(class_names), (), used)).save(path)
    return path


def write_reversal_cache(path: Path, per_class: int = 40) -> Path:
    """A synthetic cache whose classes only frame order tells apart. Tokens [T=4, 1+2, 8]: each pair is one motion forwards and backwards; 'static' never moves."""
    import numpy as np

    from stepcli.cache.format import Manifest
    from stepcli.cache.records import DatasetRecord, ExtractionRecord
    from stepcli.cache.writer import ShardWriter

    names, pairs = ["up", "down", "left", "right", "static"], [["up", "down"], ["left", "right"]]
    rng = np.random.default_rng(0)
    ramp = np.linspace(-1, 1, 4)
    axis = np.eye(8)
    splits = ["train"] * (per_class // 2) + ["val"] * (per_class // 4) + ["test"] * (per_class // 4)
    with ShardWriter(path, clips_per_shard=1000) as writer:
        for label in range(5):
            for i, split in enumerate(splits):
                motion = 0 * ramp if label == 4 else ramp if label % 2 == 0 else ramp[::-1]
                tokens = rng.normal(0, 0.3, (4, 3, 8)) + axis[label // 2 + 4]
                tokens[:, 1:] += 2 * motion[:, None, None] * axis[label // 2]
                writer.add(f"c{label}-{i}", label, split, [tokens[None]], np.arange(4)[None], np.arange(4)[None] / 8.0)
    extraction = ExtractionRecord(
        backbone="synthetic", weights="none", image_size=0, mean=(0.0,), std=(1.0,), resize="none", normalize="none",
        layer=-1, num_frames=4, sampler="all", dtype="float16", num_prefix=1, num_patches=2, dim=8,
    )  # fmt: skip
    dataset = DatasetRecord("reversal", tuple(names), tuple(map(tuple, pairs)), ("test", "train", "val"))
    Manifest(extraction=extraction, dataset=dataset).save(path)
    return path


RECIPES = TESTS.parent / "recipes"


@pytest.fixture(scope="session")
def demo_study(tiny_openclip, tmp_path_factory) -> Path:
    """`stepcli demo --config recipes/demo.yaml` with the tiny backbone and a small dataset: the whole
    recipe end to end, its OUT (cache/, compare/ with report.html, config.yaml). Tests read, never write it."""
    out = tmp_path_factory.mktemp("demo-study") / "demo"
    ok("demo", "--config", RECIPES / "demo.yaml", "--out", out, "--backbone", TINY_BACKBONE,
       "--image-size", TINY_IMAGE_SIZE, "--workers", 0, "--size", 4, "--epochs", 1, "--permutations", 2)  # fmt: skip
    return out
