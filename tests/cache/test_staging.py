"""An epoch too large for one shuffle is drawn in groups and read a group at a time: the order is
still a permutation of the train rows, the same in memory and streamed, and the staged reads give
exactly the tokens each clip view holds, with two groups in memory at most."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import make_demo_cache, ok
from hypothesis import given, settings
from hypothesis import strategies as st

from stepcli.cache.reader import FeatureCache
from stepcli.probe import data
from stepcli.probe.data import SHUFFLE_GROUP_BYTES, epoch_order, epoch_views, iterate_batches


def test_an_epoch_that_fits_one_group_is_one_shuffle() -> None:
    """Below the group size the order is the one plain permutation it has always been."""
    rows = np.arange(3, 500, 2)
    drawn = epoch_order(rows, 16, seed=4, epoch=2, view_bytes=SHUFFLE_GROUP_BYTES // len(rows))
    expected = np.random.default_rng([4, 2]).permutation(rows)
    assert drawn.groups == ()
    np.testing.assert_array_equal(np.concatenate(drawn.batches), expected)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 300),
    batch_size=st.integers(1, 40),
    clips_per_group=st.integers(1, 50),
    seed=st.integers(0, 3),
)
def test_groups_partition_the_rows_and_each_is_read_together(n, batch_size, clips_per_group, seed) -> None:
    rows = np.sort(np.random.default_rng(seed).choice(1000, n, replace=False))
    view_bytes = SHUFFLE_GROUP_BYTES // clips_per_group + 1  # more than one group's worth whenever n > clips_per_group
    drawn = epoch_order(rows, batch_size, seed, 1, view_bytes)
    order = np.concatenate(drawn.batches)
    assert sorted(order.tolist()) == rows.tolist()  # every row once
    assert all(len(b) == batch_size for b in drawn.batches[:-1])
    if n * view_bytes <= SHUFFLE_GROUP_BYTES:
        assert drawn.groups == ()
        return
    assert np.array_equal(np.sort(np.concatenate(drawn.groups)), rows)  # groups partition the rows
    start = 0
    for k, group in enumerate(drawn.groups):
        assert np.array_equal(order[start : start + len(group)], group)  # a group's rows come together
        if k < len(drawn.groups) - 1:
            assert len(group) >= batch_size  # so a batch spans two groups at most
        start += len(group)
    again = epoch_order(rows, batch_size, seed, 1, view_bytes)
    assert all(np.array_equal(a, b) for a, b in zip(again.batches, drawn.batches, strict=True))


def test_staged_reads_give_each_clip_view_as_stored(tmp_path: Path) -> None:
    out = tmp_path / "views" / "cache"
    make_demo_cache(out, clips_per_class=2, train_views=2, augment="rrc", clips_per_shard=5)
    cache, memory = FeatureCache(out), FeatureCache(out)
    memory.load_into_memory()
    rows = cache.rows("train")
    assert (cache.num_views[rows] > 1).any()
    views = epoch_views(cache, rows, seed=1, epoch=1)
    drawn = epoch_order(rows, 3, seed=1, epoch=1, view_bytes=SHUFFLE_GROUP_BYTES // 4)  # groups of 4 clips
    assert len(drawn.groups) > 2
    batch_views = [views[b] for b in drawn.batches]
    for workers in (0, 2):  # with groups the reading stays in this process
        streamed = iterate_batches(cache, drawn.batches, workers, batch_views, drawn.groups)
        in_memory = iterate_batches(memory, drawn.batches, 0, batch_views, drawn.groups)
        for batch, bviews, (tokens, labels), (expected, _) in zip(
            drawn.batches, batch_views, streamed, in_memory, strict=True
        ):  # a staged batch is valid until the group after next is read: checked as it comes
            np.testing.assert_array_equal(tokens.numpy(), cache.tokens(batch, bviews))
            np.testing.assert_array_equal(tokens.numpy(), expected.numpy())
            assert labels.tolist() == cache.labels[batch].tolist()
        assert len(cache._buffers) <= 2  # two groups' tokens in memory, whatever the epoch's size


def test_a_run_drawn_in_groups_is_the_same_streamed_and_in_memory(
    demo_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = FeatureCache(demo_cache).view_nbytes
    monkeypatch.setattr(data, "SHUFFLE_GROUP_BYTES", 20 * clip)  # the demo's train split in several groups
    monkeypatch.setattr(data, "SHUFFLE_BLOCK_BYTES", 3 * clip)
    for name, memory in (("memory", "yes"), ("stream", "no")):
        ok("train-probe", "--cache", demo_cache, "--probe", "linear", "--out", tmp_path / name, "--epochs", "2",
           "--batch-size", "8", "--in-memory", memory, "--quiet")  # fmt: skip
    assert (tmp_path / "memory/metrics.json").read_bytes() == (tmp_path / "stream/metrics.json").read_bytes()
    monkeypatch.setattr(data, "SHUFFLE_GROUP_BYTES", 1 << 40)  # one shuffle: another order, other numbers
    ok("train-probe", "--cache", demo_cache, "--probe", "linear", "--out", tmp_path / "one", "--epochs", "2",
       "--batch-size", "8", "--in-memory", "no", "--quiet")  # fmt: skip
    assert (tmp_path / "one/metrics.json").read_bytes() != (tmp_path / "stream/metrics.json").read_bytes()
