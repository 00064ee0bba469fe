"""Extraction at the backbone's speed: frames per backbone call, the allocator, threads and
workers sized to the machine, and the report of where the time went; none may change a ViT's tokens."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
import torch
from conftest import TINY_BACKBONE, TINY_IMAGE_SIZE, cache_tokens, make_demo_cache

from stepcli.extract.allocator import keep_freed_memory
from stepcli.extract.encoders import load_backbone
from stepcli.extract.encoders.base import CALL_ACTIVATION_BYTES
from stepcli.extract.pipeline import ExtractConfig, decode_workers


def test_the_default_backbone_encodes_a_batch_of_clips_in_one_call_as_before():
    """A different number of frames per call may change fp32 rounding in the BLAS: the default
    backbone's batch of clips (--batch-size x --frames) stays one call, so its tokens stay bit for bit."""
    encoder = load_backbone(ExtractConfig.backbone, ExtractConfig.image_size, meta=True)
    assert encoder.frames_per_call >= ExtractConfig.batch_size * ExtractConfig.num_frames


def test_a_cnn_runs_in_calls_whose_activations_stay_under_the_mmap_threshold(one_thread):
    """MobileNetV2's widest map (96 x 112 x 112 floats, 4.8 MB a frame) at 224 px: a few frames a call,
    and the tokens of calls of a few frames are those of one call (up to fp32 rounding)."""
    meta = load_backbone("timm:mobilenetv2_100", 224, meta=True)
    assert 1 < meta.frames_per_call <= CALL_ACTIVATION_BYTES // (96 * 112 * 112 * 4)
    encoder = load_backbone("timm:mobilenetv2_100", 64)
    pixels = [torch.randn(3, 4, 3, 64, 64, generator=torch.Generator().manual_seed(0))]
    encoder.frames_per_call = 5  # 12 frames: calls of 5, 5 and 2
    split = encoder.encode_views(pixels, torch.device("cpu"))[0][0]
    with torch.no_grad():
        whole = encoder(pixels[0].flatten(0, 1)).reshape(3, 4, *split.shape[2:]).numpy()
    np.testing.assert_allclose(split.astype(np.float32), whole, rtol=1e-2, atol=1e-2)


def test_the_allocator_keeps_freed_memory_where_it_is_glibc():
    libc = ctypes.CDLL(None)
    assert keep_freed_memory() is hasattr(libc, "gnu_get_libc_version")
    assert keep_freed_memory() is keep_freed_memory()  # once per process


def test_decode_workers_leave_a_cpus_cores_to_the_backbone():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert [decode_workers(cpu, n) for n in (1, 2, 4, 8, 64)] == [0, 0, 1, 2, 8]  # in-process below 4 cores
    assert [decode_workers(gpu, n) for n in (1, 2, 8, 64)] == [1, 1, 7, 8]


@pytest.mark.slow
def test_the_tiny_vit_caches_the_same_tokens_in_calls_of_any_size_and_says_where_the_time_went(tmp_path, one_thread):
    """The pipeline's tokens equal the encoder's one call on the clip's frames, bit for bit, and the
    summary says the throughput and the decode / backbone / write split."""
    summary = make_demo_cache(tmp_path / "cache", clips_per_class=1)
    timing = summary.timing
    assert summary.extracted == 12 and timing.frames == 12 * 8 and timing.threads == 1 and timing.workers == 0
    assert timing.forward > 0 and timing.decode > 0 and timing.write > 0
    line = summary.report(tmp_path / "cache")[1]
    assert line.startswith("throughput ") and "frames/s" in line and "backbone" in line and "decode workers" in line
    from stepcli.extract.datasets import DatasetOptions, load_dataset
    from stepcli.extract.video import sample_clip

    encoder = load_backbone(TINY_BACKBONE, TINY_IMAGE_SIZE)
    clips = load_dataset("demo", DatasetOptions(root=tmp_path / "demo-videos", size=1)).clips
    cached = cache_tokens(tmp_path / "cache")
    for clip in clips[:3]:
        frames = encoder.preprocess(sample_clip(clip.path, 8, clip.start, clip.end, clip.frame_range).frames)
        with torch.no_grad():
            expected = encoder(frames).numpy().astype(np.float16)
        assert cached[clip.clip_id].tobytes() == expected.tobytes(), clip.clip_id
