"""Cached tokens equal a direct forward pass of the same model on the same decoded frames."""

from __future__ import annotations

import logging

import numpy as np
import open_clip
import pytest
import timm
import torch
from conftest import TINY_IMAGE_SIZE, TINY_OPENCLIP, make_demo_cache
from safetensors.torch import save_file

from stepcli.cache.reader import FeatureCache
from stepcli.errors import StepcliError
from stepcli.extract.encoders import load_backbone
from stepcli.extract.video import sample_clip

DINO = "vit_small_patch14_reg4_dinov2"
DINO_SIZE = 56  # 4x4 patches of 14 px


def _direct_openclip(model, pixels: torch.Tensor) -> torch.Tensor:
    out = model.visual.eval().forward_intermediates(
        pixels, indices=1, normalize_intermediates=True, intermediates_only=True,
        output_fmt="NLC", output_extra_tokens=True,
    )  # fmt: skip
    return torch.cat([out["image_intermediates_prefix"][0], out["image_intermediates"][0]], dim=1)


def _direct_timm(model, pixels: torch.Tensor) -> torch.Tensor:
    out = model.eval().forward_features(pixels)  # final norm applied: every token after the last block
    return out


def _check_cache_matches(cache_dir, encode) -> None:
    cache = FeatureCache(cache_dir)
    for row in (0, len(cache) // 2, len(cache) - 1):
        clip_id = cache.clip_ids[row]
        slug = clip_id.rsplit("-", 1)[0]
        video = cache_dir.parent / "demo-videos" / slug / f"{clip_id}.mp4"
        frames = sample_clip(video, cache.layout.num_frames).frames
        with torch.no_grad():
            expected = encode(frames).numpy()
        cached = cache.tokens([row])[0].astype(np.float32)
        np.testing.assert_allclose(cached, expected, rtol=2e-3, atol=2e-3)


def test_openclip_tokens_equal_direct_forward(demo_cache):
    encoder = load_backbone(f"openclip:{TINY_OPENCLIP}", image_size=TINY_IMAGE_SIZE)
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the random-init seed stepcli uses, through open_clip's own factory
        model = open_clip.create_model(TINY_OPENCLIP, pretrained=None, force_image_size=TINY_IMAGE_SIZE)
    _check_cache_matches(demo_cache, lambda frames: _direct_openclip(model, encoder.preprocess(frames)))


def test_timm_dinov2_tokens_equal_direct_forward(tmp_path):
    out = tmp_path / "cache"
    make_demo_cache(out, clips_per_class=1, backbone=f"timm:{DINO}", image_size=DINO_SIZE, num_frames=4)
    encoder = load_backbone(f"timm:{DINO}", image_size=DINO_SIZE)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = timm.create_model(DINO, pretrained=False, img_size=DINO_SIZE)
    cache = FeatureCache(out)
    assert cache.clip_shape == (4, 5 + 16, 384)  # CLS + 4 registers, 4x4 patches
    _check_cache_matches(out, lambda frames: _direct_timm(model, encoder.preprocess(frames)))


def test_local_checkpoint_gives_its_tokens_not_random_ones(tmp_path):
    pixels = torch.randn(2, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    torch.manual_seed(1234)
    trained = open_clip.create_model(TINY_OPENCLIP, pretrained=None, force_image_size=TINY_IMAGE_SIZE)
    checkpoint = tmp_path / "tiny.pt"
    torch.save(trained.state_dict(), checkpoint)
    loaded = load_backbone(f"openclip:{TINY_OPENCLIP}:{checkpoint}", image_size=TINY_IMAGE_SIZE)
    random = load_backbone(f"openclip:{TINY_OPENCLIP}", image_size=TINY_IMAGE_SIZE)
    with torch.no_grad():
        expected = _direct_openclip(trained, pixels)
        torch.testing.assert_close(loaded(pixels), expected)
        assert not torch.allclose(random(pixels), expected, atol=1e-2)
    assert loaded.weights.startswith("sha256:") and random.weights == "random-init"


def test_timm_local_checkpoint(tmp_path):
    torch.manual_seed(99)
    trained = timm.create_model(DINO, pretrained=False, img_size=DINO_SIZE, depth=2)
    # a depth-2 model cannot load into the 12-block architecture: the error is one clear line
    save_file(trained.state_dict(), tmp_path / "wrong.safetensors")
    with pytest.raises(StepcliError, match="cannot load"):
        load_backbone(f"timm:{DINO}:{tmp_path / 'wrong.safetensors'}", image_size=DINO_SIZE)
    torch.manual_seed(98)
    full = timm.create_model(DINO, pretrained=False, img_size=DINO_SIZE)
    save_file(full.state_dict(), tmp_path / "dino.safetensors")
    encoder = load_backbone(f"timm:{DINO}:{tmp_path / 'dino.safetensors'}", image_size=DINO_SIZE)
    pixels = torch.randn(1, 3, DINO_SIZE, DINO_SIZE)
    with torch.no_grad():
        torch.testing.assert_close(encoder(pixels), _direct_timm(full, pixels))


@pytest.mark.parametrize(
    "spec, message",
    [
        ("resnet50", "is not openclip"),
        ("openclip:No-Such-Model", "has no model"),
        (f"openclip:{TINY_OPENCLIP}:/nonexistent/w.pt", "not found"),
        ("openclip:ViT-B-32:no_such_tag", "no pretrained tag"),
        ("openclip:ViT-B-32:laion2b_s34b_b79k", "pass the file"),
        ("timm:vit_nope", "has no model"),
    ],
)
def test_bad_backbone_specs_fail_fast(spec, message):
    with pytest.raises(StepcliError, match=message):
        load_backbone(spec, image_size=TINY_IMAGE_SIZE)


def test_layer_choice(tmp_path):
    with pytest.raises(StepcliError, match="outside"):
        load_backbone(f"openclip:{TINY_OPENCLIP}", image_size=TINY_IMAGE_SIZE, layer=5)
    first = load_backbone(f"openclip:{TINY_OPENCLIP}", image_size=TINY_IMAGE_SIZE, layer=0)
    last = load_backbone(f"openclip:{TINY_OPENCLIP}", image_size=TINY_IMAGE_SIZE, layer=-1)
    pixels = torch.randn(1, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    with torch.no_grad():
        assert not torch.allclose(first(pixels), last(pixels))


def test_random_init_is_announced_once_and_the_root_logger_is_left_alone(tiny_openclip, capfd) -> None:
    root = logging.getLogger()
    before = (root.level, list(root.handlers), list(root.filters))
    load_backbone(tiny_openclip, TINY_IMAGE_SIZE)
    err = capfd.readouterr().err
    assert "initialized randomly" not in err  # open_clip's own notice, on the root logger
    assert (root.level, list(root.handlers), list(root.filters)) == before


def test_a_weights_file_that_is_no_checkpoint_is_refused_by_the_meta_build_too(tmp_path):
    """Before: `backbones --spec ...:TEXTFILE` (a meta build) showed the file as fine, extract refused
    it with "cannot read weights file ...: 101"."""
    text = tmp_path / "weights.pt"
    text.write_text("these are not weights\n")
    for meta in (True, False):
        with pytest.raises(StepcliError, match="neither a safetensors file nor a PyTorch checkpoint"):
            load_backbone(f"openclip:{TINY_OPENCLIP}:{text}", image_size=TINY_IMAGE_SIZE, meta=meta)
