"""Shared fixtures: a tiny open_clip config registered through open_clip's own config loader,
and a small demo cache built by the real extraction pipeline (real videos, real HDF5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
    from stepcli.extract.datasets import DatasetOptions
    from stepcli.extract.pipeline import ExtractConfig, run_extract

    options = DatasetOptions(root=Path(out).parent / "demo-videos", size=clips_per_class)
    config = ExtractConfig(
        dataset="demo",
        out=Path(out),
        dataset_options=options,
        backbone=TINY_BACKBONE,
        image_size=TINY_IMAGE_SIZE,
        workers=0,
        quiet=True,
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    return run_extract(config)


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
