"""The streamed read path: direct chunk reads give exactly what h5py gives, in any order, in worker
processes too, and a shard they cannot read directly is read through h5py."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import DATA, make_demo_cache

from stepcli.cache.reader import FeatureCache
from stepcli.probe.data import fixed_batches, iterate_batches

V1 = DATA / "cache_v1"


def _h5py_tokens(cache: FeatureCache, rows, views) -> np.ndarray:
    out = []
    for row, view in zip(rows, views, strict=True):
        with h5py.File(cache.shard_paths[cache._shard_of[row]], "r") as f:
            stored = f["tokens"] if isinstance(f["tokens"], h5py.Dataset) else f["tokens"][str(cache.layer)]
            r = cache._row_of[row]
            out.append(stored[r] if stored.ndim == 4 else stored[r, view])
    return np.stack(out)


def test_direct_reads_equal_h5py_reads_in_any_order(tmp_path):
    out = tmp_path / "views" / "cache"
    make_demo_cache(out, clips_per_class=2, train_views=2, augment="rrc", layers=(-1, -2), clips_per_shard=5)
    for layer in (-1, -2):
        cache = FeatureCache(out, layer=layer)
        rows, views, _ = cache.view_items(np.arange(len(cache)))
        order = np.random.default_rng(0).permutation(len(rows))
        for batch in (order, np.arange(len(rows)), order[:7]):
            np.testing.assert_array_equal(cache.tokens(rows[batch], views[batch]), _h5py_tokens(cache, rows[batch],
                                          views[batch]))  # fmt: skip
        assert all(cache.direct_shards)


def test_reader_processes_read_the_same_batches(tmp_path):
    cache = FeatureCache(shutil.copytree(V1, tmp_path / "v1"))
    batches = fixed_batches(np.random.default_rng(1).permutation(len(cache)), 5)
    inline = [tokens.numpy() for tokens, _ in iterate_batches(cache, batches, workers=0)]
    workers = [tokens.numpy() for tokens, _ in iterate_batches(cache, batches, workers=2)]
    for a, b in zip(inline, workers, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_compressed_shard_is_read_through_h5py(tmp_path):
    copy = Path(shutil.copytree(V1, tmp_path / "v1"))
    shard = next((copy / "shards").glob("*.h5"))
    expected = FeatureCache(copy).tokens(np.arange(10))
    with h5py.File(shard, "a") as f:
        tokens = f["tokens"][:]
        del f["tokens"]
        f.create_dataset("tokens", data=tokens, chunks=(1, *tokens.shape[1:]), compression="gzip")
    cache = FeatureCache(copy)
    np.testing.assert_array_equal(cache.tokens(np.arange(10)), expected)
    assert cache.direct_shards == [False]


def _resident_file_kib() -> int:
    """Resident pages of this process that are backed by files (mapped shards count here)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("RssFile:"))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="resident memory by kind is read from /proc")
def test_a_streamed_pass_does_not_keep_the_cache_resident(tmp_path):
    """Reading every clip once (a streamed epoch) must not leave the cache's pages in our resident
    memory: at SSv2's size that is the whole 7 GB cache in RSS, without --in-memory yes."""
    from stepcli.cache.format import Manifest
    from stepcli.cache.records import DatasetRecord, ExtractionRecord
    from stepcli.cache.writer import ShardWriter

    rng = np.random.default_rng(0)
    with ShardWriter(tmp_path, clips_per_shard=200) as writer:
        for i in range(600):  # [T=8, 1+4, 384] float16: 30 KiB a clip, 18 MiB in all
            writer.add(f"{i:04d}", i % 3, "train", [rng.standard_normal((1, 8, 5, 384))], np.arange(8)[None],
                       np.arange(8)[None] / 8.0)  # fmt: skip
    extraction = ExtractionRecord(
        backbone="synthetic", weights="none", image_size=0, mean=(0.0,), std=(1.0,), resize="none", normalize="none",
        layer=-1, num_frames=8, sampler="all", dtype="float16", num_prefix=1, num_patches=4, dim=384,
    )  # fmt: skip
    Manifest(extraction=extraction, dataset=DatasetRecord("synthetic", ("a", "b", "c"), (), ("train",))).save(tmp_path)
    cache = FeatureCache(tmp_path)
    before = _resident_file_kib()
    for tokens, _ in iterate_batches(cache, fixed_batches(rng.permutation(len(cache)), 16)):
        assert tokens.shape == (len(tokens), 8, 5, 384)
    assert all(cache.direct_shards)  # read directly, not through h5py
    grown = _resident_file_kib() - before
    assert grown < cache.nbytes // 1024 // 4, f"{grown} KiB of file pages resident after reading {cache.nbytes} bytes"


def _synthetic_cache(out: Path, clips: int, clips_per_shard: int, bulk: bool) -> FeatureCache:
    """`clips` random clips of [T=8, 1+4, 384] float16 (30 KiB each), written one by one or in bulk."""
    from stepcli.cache.format import Manifest
    from stepcli.cache.records import DatasetRecord, ExtractionRecord
    from stepcli.cache.writer import ShardWriter

    tokens = np.random.default_rng(0).standard_normal((clips, 1, 8, 5, 384)).astype(np.float32)
    ids, labels, splits = [f"{i:04d}" for i in range(clips)], [i % 3 for i in range(clips)], ["train"] * clips
    frames = np.arange(8)[None]
    with ShardWriter(out, clips_per_shard=clips_per_shard) as writer:
        if bulk:
            writer.add_clips(ids, labels, splits, [tokens], frames, frames / 8.0, ["g"] + [""] * (clips - 1))
        else:
            for i in range(clips):
                writer.add(ids[i], labels[i], splits[i], [tokens[i]], frames, frames / 8.0, group="g" if i == 0 else "")
    extraction = ExtractionRecord(
        backbone="synthetic", weights="none", image_size=0, mean=(0.0,), std=(1.0,), resize="none", normalize="none",
        layer=-1, num_frames=8, sampler="all", dtype="float16", num_prefix=1, num_patches=4, dim=384,
    )  # fmt: skip
    Manifest(extraction=extraction, dataset=DatasetRecord("synthetic", ("a", "b", "c"), (), ("train",))).save(out)
    return FeatureCache(out)


def test_clips_written_in_bulk_are_the_clips_written_one_by_one(tmp_path):
    """`add_clips` (one write per dataset and shard) across a shard boundary stores what `add` stores."""
    one, bulk = (_synthetic_cache(tmp_path / name, 23, 10, name == "bulk") for name in ("one", "bulk"))
    assert [p.name for p in one.shard_paths] == [p.name for p in bulk.shard_paths] and len(bulk.shard_paths) == 3
    for a, b in zip(one.shard_paths, bulk.shard_paths, strict=True):
        with h5py.File(a) as fa, h5py.File(b) as fb:
            names = []
            fa.visit(names.append)
            for name in names:
                if isinstance(fa[name], h5py.Dataset):
                    np.testing.assert_array_equal(fa[name][()], fb[name][()], err_msg=name)
    assert bulk.groups[0] == "g" and bulk.groups[1] == bulk.clip_ids[1]


def _resident_bytes(paths: list[Path]) -> int:
    import subprocess

    done = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "--output", "RES", *map(str, paths)],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return sum(int(x) for x in done.stdout.split())


@pytest.mark.skipif(shutil.which("fincore") is None or not hasattr(os, "posix_fadvise"), reason="needs fincore")
def test_prefetch_starts_reading_the_clips_ahead_into_the_page_cache(tmp_path):
    """A streamed reader asks the kernel for the batches ahead: after `prefetch` of the first half
    of a cache dropped from the page cache, that half (and not the whole cache) is there."""
    import time

    cache = _synthetic_cache(tmp_path / "cache", 400, 400, bulk=True)
    paths = list(cache.shard_paths)
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    total = sum(p.stat().st_size for p in paths)
    if _resident_bytes(paths) > total // 10:
        pytest.skip("this file system keeps the dropped file in memory")
    cache.prefetch(np.arange(200))
    for _ in range(100):  # the kernel reads ahead without us waiting; give it up to 5 s
        if _resident_bytes(paths) >= cache.nbytes // 2:
            break
        time.sleep(0.05)
    resident = _resident_bytes(paths)
    assert cache.nbytes // 2 <= resident < 0.8 * total, f"{resident} of {total} bytes resident"
    np.testing.assert_array_equal(cache.tokens(np.arange(200)), _h5py_tokens(cache, np.arange(200), [0] * 200))
