"""Clip groups (a source video, a clip and its reversed twin) reach stage two, and no split drawn
from the cache cuts one apart; caches written before groups were recorded still load."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import DATA, TINY_BACKBONE, TINY_IMAGE_SIZE, ok, write_synthetic_cache

from stepcli.cache.reader import FeatureCache
from stepcli.cache.verify import verify_cache
from stepcli.extract.datasets import DatasetOptions
from stepcli.extract.pipeline import ExtractConfig, run_extract
from stepcli.probe.data import resolve_splits

pytestmark = pytest.mark.usefixtures("one_thread")


def _twins_cache(tmp_path: Path, splits: list[str] | None = None) -> FeatureCache:
    """Like the demo: 3 pairs of classes, each draw a clip of one class and its twin of the other."""
    labels, groups = [], []
    for pair in range(3):
        for draw in range(10):
            labels += [2 * pair, 2 * pair + 1]
            groups += [f"pair{pair}-{draw}"] * 2
    names = [f"class{c}" for c in range(6)]
    path = write_synthetic_cache(tmp_path / "cache", labels, splits or [""] * len(labels), names, groups=groups)
    return FeatureCache(path)


def _split_of_group(cache: FeatureCache, rows_by_split: dict[str, np.ndarray]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for split, rows in rows_by_split.items():
        for row in rows:
            found.setdefault(str(cache.groups[row]), set()).add(split)
    return found


def test_a_drawn_split_never_puts_one_group_in_two_splits(tmp_path: Path) -> None:
    cache = _twins_cache(tmp_path)
    assert cache.has_groups and len(set(cache.groups.tolist())) == 30
    for seed in range(5):
        splits = resolve_splits(cache, seed)
        where = _split_of_group(cache, {s: splits.rows(s) for s in ("train", "val", "test")})
        assert all(len(s) == 1 for s in where.values()), {g: s for g, s in where.items() if len(s) > 1}
        assert splits.counts() == {"train": 36, "val": 12, "test": 12}  # 60/20/20 of each pair's draws
        assert "by clip group (30 groups of 60 clips)" in splits.notes[0]


def test_val_held_out_of_train_keeps_groups_whole(tmp_path: Path) -> None:
    splits = [("train" if draw < 7 else "test") for _ in range(3) for draw in range(10) for _ in range(2)]
    cache = _twins_cache(tmp_path, splits)
    drawn = resolve_splits(cache, 0)
    where = _split_of_group(cache, {"train": drawn.train, "val": drawn.val})
    assert drawn.source == "cache+val-from-train" and all(len(s) == 1 for s in where.values())
    assert len(drawn.val) > 0 and "by clip group" in drawn.notes[0]


def test_a_run_records_its_groups_and_says_how_it_split(tmp_path: Path) -> None:
    cache = _twins_cache(tmp_path)
    out = tmp_path / "run"
    result = ok("train-probe", "--cache", cache.path, "--probe", "knn", "--out", out)
    assert "drew a seeded 60/20/20 split per class by clip group" in result.stderr
    saved = json.loads((out / "splits.json").read_text())
    for split in ("train", "val", "test"):
        assert saved["groups"][split] == [str(cache.groups[cache.clip_ids.index(i)]) for i in saved[split]]


def test_caches_without_groups_load_with_one_group_per_clip(tmp_path: Path) -> None:
    """The v1 fixture, and a v2 cache written before groups were (its `group` datasets deleted)."""
    old = FeatureCache(DATA / "cache_v1")
    assert not old.has_groups and old.groups.tolist() == old.clip_ids
    cache = _twins_cache(tmp_path)
    for shard in cache.shard_paths:
        with h5py.File(shard, "a") as f:
            del f["group"]
    cache = FeatureCache(cache.path)
    assert not cache.has_groups and cache.groups.tolist() == cache.clip_ids
    assert verify_cache(cache.path).ok
    (note,) = resolve_splits(cache, 0).notes
    assert "one group per clip (the cache records no clip groups" in note


def test_the_csv_group_column_and_the_demo_twins_reach_the_cache(demo_cache: Path, tmp_path: Path) -> None:
    """The demo's twins share a group; a CSV's `group` column is what the cache records."""
    demo = FeatureCache(demo_cache)
    groups: dict[str, list[int]] = {}
    for r in range(len(demo)):
        groups.setdefault(str(demo.groups[r]), []).append(r)
    assert demo.has_groups and all(len(rows) == 2 for rows in groups.values())  # each draw and its reversal
    for rows in groups.values():
        assert len(set(demo.splits[rows].tolist())) == 1 and demo.labels[rows[0]] != demo.labels[rows[1]]
    videos = demo_cache.parent / "demo-videos"
    with (videos / "annotations.csv").open() as handle:
        rows = list(csv.DictReader(handle))[:6]
    listing = tmp_path / "list.csv"
    listing.write_text(
        "path,label,group\n" + "".join(f"{r['path']},{r['label']},video-{i // 3}\n" for i, r in enumerate(rows))
    )
    options = DatasetOptions(root=videos, annotations=listing)
    run_extract(ExtractConfig(dataset="csv", out=tmp_path / "csv", dataset_options=options, backbone=TINY_BACKBONE,
                              image_size=TINY_IMAGE_SIZE, workers=0))  # fmt: skip
    cache = FeatureCache(tmp_path / "csv")
    assert sorted(cache.groups.tolist()) == ["video-0"] * 3 + ["video-1"] * 3
