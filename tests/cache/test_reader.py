"""The streamed read path: direct chunk reads give exactly what h5py gives, in any order, in worker
processes too, and a shard they cannot read directly is read through h5py."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
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
        assert all(direct is not None for direct in cache._maps.values())


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
    assert list(cache._maps.values()) == [None]
