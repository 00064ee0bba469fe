"""Tokens that overflow float16 are never cached: each such clip goes to failures.jsonl with the
reason, the finite ones are cached, and the exit status says clips are missing."""

from __future__ import annotations

import json

import numpy as np
import open_clip
import torch
from conftest import TINY_IMAGE_SIZE, TINY_OPENCLIP, cache_tokens, invoke, make_demo_cache

from stepcli.cache.verify import verify_cache

FLOAT16_MAX = 65504.0


def test_overflowing_checkpoint_fails_clips_not_the_cache(demo_cache, tmp_path):
    # the tokens are the final LayerNorm's output: scaling its weight and bias scales every token,
    # as an outlier channel of a real CLIP/DINOv2 does; pick the scale from the unscaled tokens of
    # the same random-init model so that about half the clips overflow float16
    peaks = sorted(float(np.abs(t.astype(np.float32)).max()) for t in cache_tokens(demo_cache).values())
    scale = 1.02 * FLOAT16_MAX / peaks[len(peaks) // 2]
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the random-init seed stepcli uses, so the checkpoint is that model scaled
        model = open_clip.create_model(TINY_OPENCLIP, pretrained=None, force_image_size=TINY_IMAGE_SIZE)
    state = model.state_dict()
    for name in ("visual.ln_post.weight", "visual.ln_post.bias"):
        state[name] = state[name] * scale
    checkpoint = tmp_path / "scaled.pt"
    torch.save(state, checkpoint)

    out = tmp_path / "cache"
    summary = make_demo_cache(out, backbone=f"openclip:{TINY_OPENCLIP}:{checkpoint}")
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert 0 < len(failures) < 48 and summary.failed == len(failures) == summary.missing
    assert all("not finite after the cast to float16" in f["reason"] for f in failures)

    cached = cache_tokens(out)
    assert len(cached) + len(failures) == 48
    assert not {f["clip_id"] for f in failures} & set(cached)
    assert all(np.isfinite(tokens).all() for tokens in cached.values())
    assert verify_cache(out).ok

    result = invoke("extract", "--dataset", "demo", "--size", "4", "--out", out, "--root", tmp_path / "demo-videos",
                    "--backbone", f"openclip:{TINY_OPENCLIP}:{checkpoint}", "--image-size", TINY_IMAGE_SIZE,
                    "--workers", "0")  # fmt: skip
    assert result.exit_code == 1, result.output  # a rerun retries them, and they are still missing
    assert f"{len(failures)} failed" in result.stderr
