from stepcli.cache.reader import FeatureCache


def test_demo_cache_fixture(demo_cache):
    cache = FeatureCache(demo_cache)
    assert len(cache) == 48
    assert cache.clip_shape == (8, 17, 64)
    assert cache.tokens([0, 5]).shape == (2, 8, 17, 64)
