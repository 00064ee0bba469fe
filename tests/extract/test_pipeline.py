"""The demo cache the other tests read, and extraction with decoding processes (the CLI default)."""

import numpy as np
import pytest
from conftest import cache_tokens, make_demo_cache

from stepcli.cache.reader import FeatureCache


def test_demo_cache_fixture(demo_cache):
    cache = FeatureCache(demo_cache)
    assert len(cache) == 48
    assert cache.clip_shape == (8, 17, 64)
    assert cache.tokens([0, 5]).shape == (2, 8, 17, 64)


@pytest.mark.slow
def test_two_decoding_workers_cache_the_same_tokens_as_none(tmp_path):
    """`--workers 2` decodes in other processes; the cached tokens must not depend on it."""
    for workers in (0, 2):  # both read the same generated videos (tmp_path/demo-videos)
        summary = make_demo_cache(tmp_path / f"w{workers}", clips_per_class=2, workers=workers)
        assert summary.extracted == 24 and summary.failed == 0
    inline, workers = cache_tokens(tmp_path / "w0"), cache_tokens(tmp_path / "w2")
    assert sorted(inline) == sorted(workers)
    for clip_id, tokens in workers.items():
        np.testing.assert_array_equal(tokens, inline[clip_id], err_msg=clip_id)
