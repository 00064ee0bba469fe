"""Cache v2: views (temporal clips x spatial crops, augmented train views), several layers, the token
budget and the free-disk check, through the real pipeline, backbone, videos and HDF5 files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_BACKBONE, TINY_IMAGE_SIZE, TINY_OPENCLIP, cache_tokens, fails, make_demo_cache, ok

from stepcli.cache.reader import FeatureCache
from stepcli.cache.records import ViewsRecord
from stepcli.errors import StepcliError
from stepcli.extract.video import sample_clip, write_video
from stepcli.probe.evaluation.inference import predict_logits
from stepcli.probe.runs.rundir import load_run
from stepcli.probe.studies.shuffle import ShuffleConfig, shuffle_test

FRAMES = 4
HEIGHT, WIDTH = 48, 80  # wide, so that the left, centre and right crops differ


@pytest.fixture(scope="module")
def wide_videos(tmp_path_factory) -> Path:
    """12 lossless wide videos of two classes (4 train, 1 val, 1 test each) and their CSV list."""
    root = tmp_path_factory.mktemp("wide")
    rng = np.random.default_rng(0)
    lines = ["path,label,split"]
    for i in range(12):
        frames = rng.integers(0, 256, (16, HEIGHT, WIDTH, 3), dtype=np.uint8)
        write_video(root / f"v{i:02d}.mp4", frames)
        split = ["train"] * 4 + ["val", "test"]
        lines.append(f"v{i:02d}.mp4,{'ab'[i % 2]},{split[i // 2]}")
    (root / "list.csv").write_text("\n".join(lines) + "\n")
    return root / "list.csv"


def _extract(annotations: Path, out: Path, *extra) -> Path:
    ok("-q", "extract", "--dataset", "csv", "--annotations", annotations, "--out", out, "--backbone", TINY_BACKBONE,
       "--image-size", TINY_IMAGE_SIZE, "--workers", 0, "--frames", FRAMES, *extra)  # fmt: skip
    return out


@pytest.fixture(scope="module")
def views_cache(wide_videos, tmp_path_factory) -> Path:
    """2 temporal clips x 3 spatial crops of every clip."""
    return _extract(wide_videos, tmp_path_factory.mktemp("views") / "cache", "--clips", 2, "--crops", 3)


def _tiny_model() -> torch.nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the random-init seed stepcli uses, through open_clip's own factory
        return open_clip.create_model(TINY_OPENCLIP, pretrained=None, force_image_size=TINY_IMAGE_SIZE).visual.eval()


def _three_crops(frames: np.ndarray) -> list[torch.Tensor]:
    """Shorter side to 64 px, then the left, centre and right 64 px squares, normalised as CLIP does."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)
    width = round(WIDTH * TINY_IMAGE_SIZE / HEIGHT)
    x = F.interpolate(x, size=(TINY_IMAGE_SIZE, width), mode="bicubic", antialias=True, align_corners=False)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1) * 255
    slack = width - TINY_IMAGE_SIZE
    return [(x[..., left : left + TINY_IMAGE_SIZE].float() - mean) / std for left in (0, slack // 2, slack)]


def test_two_clips_three_crops_are_six_views_equal_to_a_direct_forward(views_cache, wide_videos):
    cache = FeatureCache(views_cache)
    assert cache.manifest.extraction.views == ViewsRecord(clips=2, crops=3)
    assert (cache.num_views == 6).all() and len(cache) == 12
    model = _tiny_model()
    for row in (0, len(cache) - 1):
        frames = sample_clip(wide_videos.parent / cache.clip_ids[row], FRAMES, num_clips=2).frames
        for c, clip_frames in enumerate(np.split(frames, 2)):
            for s, pixels in enumerate(_three_crops(clip_frames)):
                with torch.no_grad():
                    out = model.forward_intermediates(pixels, indices=[1], normalize_intermediates=True,
                                                      intermediates_only=True, output_fmt="NLC",
                                                      output_extra_tokens=True)  # fmt: skip
                expected = torch.cat([out["image_intermediates_prefix"][0], out["image_intermediates"][0]], 1)
                cached = cache.tokens([row], [c * 3 + s])[0].astype(np.float32)
                np.testing.assert_allclose(cached, expected.numpy(), rtol=2e-3, atol=2e-3)
    left, right = cache.tokens([0, 0], [0, 2]).astype(np.float32)
    assert np.abs(left - right).max() > 0.1, "the crops should see different parts of a wide frame"
    first, second = cache.timing(0, 0)[1], cache.timing(0, 3)[1]
    assert (second > first).all(), "the second temporal clip is offset later within every segment"
    np.testing.assert_array_equal(cache.timing(0, 1)[1], first)  # crops of one temporal clip share frames
    assert "2 temporal clips x 3 crops; 72 views in all; schema version 2" in ok("inspect", views_cache).stdout


@pytest.fixture(scope="module")
def views_runs(views_cache, tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("view-runs")
    for probe in ("linear", "attentive"):
        ok("-q", "train-probe", "--cache", views_cache, "--probe", probe, "--out", runs / probe, "--epochs", 2,
           "--device", "cpu")  # fmt: skip
    return runs


def test_evaluation_averages_the_softmax_over_views(views_runs):
    run = load_run(views_runs / "attentive")
    cache = run.open_cache()
    rows = run.rows(cache, "val")
    averaged = predict_logits(run.probe, cache, rows)[0]
    with torch.no_grad():
        probs = [torch.softmax(run.probe(torch.from_numpy(cache.tokens(rows, [v] * len(rows)))), -1) for v in range(6)]
    np.testing.assert_allclose(averaged, torch.stack(probs).mean(0).log().numpy(), rtol=1e-4, atol=1e-5)
    assert not np.allclose(probs[0], probs[2]), "views give different predictions, so the average matters"


@pytest.mark.parametrize("probe", ["linear", "attentive"])
def test_order_blind_probe_never_flips_across_views(views_runs, probe):
    result = shuffle_test(views_runs / probe, cfg=ShuffleConfig(permutations=4, device="cpu"))
    assert len(result.per_order) == 6
    assert all(order.metrics.flip_rate == 0.0 for order in result.per_order)


def test_train_views_are_augmented_on_train_only(tmp_path, wide_videos):
    out = _extract(wide_videos, tmp_path / "cache", "--train-views", 3, "--augment", "rrc:0.4")
    cache = FeatureCache(out)
    assert cache.manifest.extraction.views == ViewsRecord(train_views=3, augment="rrc:0.4")
    train = cache.rows("train")
    assert (cache.num_views[train] == 4).all()
    assert (cache.num_views[cache.rows("val")] == 1).all() and (cache.num_views[cache.rows("test")] == 1).all()
    views = cache.tokens([train[0]] * 4, [0, 1, 2, 3]).astype(np.float32)
    for a in range(4):
        for b in range(a + 1, 4):
            assert np.abs(views[a] - views[b]).max() > 0.05, f"views {a} and {b} are the same"
    again = _extract(wide_videos, tmp_path / "again", "--train-views", 3, "--augment", "rrc:0.4")
    np.testing.assert_array_equal(FeatureCache(again).tokens([train[0]], [2]), cache.tokens([train[0]], [2]))
    ok("-q", "train-probe", "--cache", out, "--probe", "linear", "--out", tmp_path / "run", "--epochs", 2)


def test_training_draws_one_seeded_view_per_clip_per_epoch(views_cache):
    from stepcli.probe.data import epoch_views

    cache = FeatureCache(views_cache)
    train = cache.rows("train")
    draws = np.stack([epoch_views(cache, train, seed=0, epoch=e)[train] for e in range(1, 13)])
    np.testing.assert_array_equal(draws[0], epoch_views(cache, train, seed=0, epoch=1)[train])
    assert draws.min() == 0 and draws.max() == 5 and len(np.unique(draws)) == 6
    assert not np.array_equal(draws[0], draws[1])


@pytest.fixture(scope="module")
def layers_cache(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("layers") / "cache"
    make_demo_cache(out, layers=(-1, -2))
    return out


def test_several_layers_in_one_pass(tmp_path, demo_cache, layers_cache):
    out = layers_cache
    last, reference = cache_tokens(out), cache_tokens(demo_cache)
    assert last.keys() == reference.keys()
    for clip_id, tokens in reference.items():
        np.testing.assert_array_equal(last[clip_id], tokens)
    other = FeatureCache(out, layer=-2)
    assert np.abs(other.tokens([0]).astype(np.float32) - FeatureCache(out).tokens([0])).max() > 0.1
    ok("-q", "train-probe", "--cache", out, "--probe", "linear", "--layer", -2, "--out", tmp_path / "run",
       "--epochs", 1)  # fmt: skip
    run = load_run(tmp_path / "run")
    assert run.layer == -2 and run.open_cache().layer == -2
    rows = run.rows(other, "test")
    with torch.no_grad():
        direct = run.probe(torch.from_numpy(other.tokens(rows))).numpy()
    np.testing.assert_allclose(predict_logits(run.probe, run.open_cache(), rows)[0], direct, rtol=1e-5, atol=1e-5)
    with pytest.raises(StepcliError, match="layer read: -2 -> -1"):
        run.check_cache(FeatureCache(out))
    assert "-1,-2" in fails("train-probe", "--cache", out, "--probe", "linear", "--layer", -3, "--out", tmp_path / "x")


def test_compare_sweeps_the_layers(tmp_path, layers_cache):
    out = tmp_path / "compare"
    table = ok("-q", "compare", "--cache", layers_cache, "--out", out, "--probes", "linear,step", "--epochs", 1,
               "--permutations", 2, "--device", "cpu", "--layers", "all").stdout  # fmt: skip
    assert "top-1 @ -1" in table and "reversal flip rate @ -2" in table and "| step |" in table
    assert (out / "layers.png").stat().st_size > 0 and (out / "layers.csv").read_text().count("\n") == 5
    for layer in (-1, -2):
        assert load_run(out / f"layer{layer}" / "runs" / "step").layer == layer
    assert "holds layers -1,-2, not -5" in fails("compare", "--cache", layers_cache, "--out", out, "--layers", "-5")


def test_pool_2x2_quarters_the_patch_tokens(tmp_path, demo_cache):
    out = tmp_path / "pooled" / "cache"
    make_demo_cache(out, pool="2x2")
    pooled, full = FeatureCache(out), FeatureCache(demo_cache)
    assert (full.layout.num_patches, pooled.layout.num_patches) == (16, 4)
    assert pooled.manifest.extraction.pool == "2x2"
    row = pooled.clip_ids.index(full.clip_ids[0])
    a, b = pooled.tokens([row])[0].astype(np.float32), full.tokens([0])[0].astype(np.float32)
    np.testing.assert_array_equal(a[:, 0], b[:, 0])  # CLS kept as it is
    grid = b[:, 1:].reshape(FRAMES * 2, 4, 4, -1)
    window = grid[:, :2, 2:].mean(axis=(1, 2))  # patch rows 0-1, columns 2-3: pooled token 1
    np.testing.assert_allclose(a[:, 2], window, atol=3e-3)
    for probe in ("step", "attentive"):
        ok("-q", "train-probe", "--cache", out, "--probe", probe, "--out", tmp_path / probe, "--epochs", 1)
    # predict pools a new video's tokens as the cache did, so it agrees with the cached clip
    run = load_run(tmp_path / "step")
    clip_id = pooled.clip_ids[row]
    video = out.parent / "demo-videos" / clip_id.rsplit("-", 1)[0] / f"{clip_id}.mp4"
    cached = predict_logits(run.probe, pooled, [row])[0, 0]
    top = json.loads(ok("predict", "--run", tmp_path / "step", "--json", "--top-k", 1, video).stdout)[0]["top"][0]
    assert top[0] == pooled.class_names[int(np.argmax(cached))]
    assert abs(top[1] - float(torch.softmax(torch.from_numpy(cached), 0).max())) < 1e-3


def test_prefix_tokens_only_are_refused_by_probes_that_need_patches(tmp_path):
    out = tmp_path / "prefix" / "cache"
    make_demo_cache(out, tokens="prefix")
    cache = FeatureCache(out)
    assert cache.clip_shape == (8, 1, 64)
    line = fails("train-probe", "--cache", out, "--probe", "step", "--out", tmp_path / "step")
    assert "prefix" in line and "linear" in line
    ok("-q", "train-probe", "--cache", out, "--probe", "linear", "--out", tmp_path / "linear", "--epochs", 1)


def test_a_cache_that_will_not_fit_is_refused_before_any_work(tmp_path):
    size = 512  # 32 x 32 patches: 1025 tokens of width 64 per frame
    per_clip = 2 * 6 * 8 * 1025 * 64 * 2  # two layers, six views, eight frames, float16
    rows = 2 * shutil.disk_usage(tmp_path).free // per_clip + 10
    annotations = tmp_path / "list.csv"
    annotations.write_text("path,label\n" + "".join(f"v{i}.mp4,a\n" for i in range(rows)))
    out = tmp_path / "cache"
    line = fails("extract", "--dataset", "csv", "--annotations", annotations, "--out", out, "--backbone",
                 TINY_BACKBONE, "--image-size", size, "--layers", "-1,-2", "--clips", 2, "--crops", 3)  # fmt: skip
    assert "free" in line and "--force" in line
    assert not out.exists()


@pytest.mark.parametrize(
    "option, named",
    [
        (["--pool", "2y2"], "--pool"),
        (["--pool", "0"], "--pool"),
        (["--crops", "2"], "--crops"),
        (["--clips", "0"], "--clips"),
        (["--train-views", "2"], "--augment"),
        (["--train-views", "2", "--augment", "flip"], "rrc"),
        (["--layers", "-1,x"], "--layers"),
        (["--layers", "-1,-1"], "twice"),
        (["--layers", "-9"], "-9"),
    ],
)
def test_bad_v2_options_are_one_line_errors(tmp_path, wide_videos, option, named):
    out = tmp_path / "cache"
    line = fails("extract", "--dataset", "csv", "--annotations", wide_videos, "--out", out, "--backbone",
                 TINY_BACKBONE, "--image-size", TINY_IMAGE_SIZE, *option)  # fmt: skip
    assert named in line
    assert not (out / "shards").exists()
