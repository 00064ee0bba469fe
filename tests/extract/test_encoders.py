"""Every encoder family and token kind, in the style of timm's test_models.py: one representative
each, random init through the real loading code at a small image size, never a mocked backbone.

Each model is built once per module (`encoders`); the checks are token shape and layout, the meta
device's layout against the real one, and a checkpoint the test writes and reloads.
"""

from __future__ import annotations

import copy

import open_clip
import pytest
import torch
from conftest import ok
from safetensors.torch import save_file

from stepcli.cache.reader import FeatureCache
from stepcli.errors import StepcliError
from stepcli.extract.encoders import load_backbone
from stepcli.extract.encoders.base import ATTENTION_POOL, CLS, GLOBAL_AVERAGE, REGISTER

# spec, image size, (P prefix names, grid, D, depth)
CASES = {
    "openclip-vit": ("openclip:ViT-S-32", 64, ((CLS,), (2, 2), 384, 12)),
    "openclip-siglip2": ("openclip:ViT-B-16-SigLIP2", 32, ((ATTENTION_POOL,), (2, 2), 768, 12)),
    "openclip-convnext": ("openclip:convnext_base", 64, ((GLOBAL_AVERAGE,), (2, 2), 1024, 5)),
    "openclip-rn50": ("openclip:RN50", 64, ((GLOBAL_AVERAGE,), (2, 2), 2048, 5)),
    "timm-dinov2-reg4": ("timm:vit_small_patch14_reg4_dinov2", 28, ((CLS,) + (REGISTER,) * 4, (2, 2), 384, 12)),
    "timm-dinov3": ("timm:vit_small_patch16_dinov3", 32, ((CLS,) + (REGISTER,) * 4, (2, 2), 384, 12)),
    "timm-siglip": ("timm:vit_base_patch16_siglip_224", 32, ((ATTENTION_POOL,), (2, 2), 768, 12)),
    "timm-eva02": ("timm:eva02_tiny_patch14_224", 28, ((CLS,), (2, 2), 192, 12)),
    "timm-resnet": ("timm:resnet18", 64, ((GLOBAL_AVERAGE,), (2, 2), 512, 6)),
    "timm-mobilenetv2": ("timm:mobilenetv2_100", 64, ((GLOBAL_AVERAGE,), (2, 2), 1280, 6)),
}


@pytest.fixture(scope="module")
def encoders(one_thread) -> dict:
    """Each case's random-init encoder, built on first use and kept for the module."""
    return {}


def _encoder(encoders: dict, case: str):
    if case not in encoders:
        spec, size, _ = CASES[case]
        encoders[case] = load_backbone(spec, size)
    return encoders[case]


def _pixels(size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("case", list(CASES))
def test_token_layout(encoders, case):
    spec, size, (prefix, grid, dim, depth) = CASES[case]
    encoder = _encoder(encoders, case)
    with torch.no_grad():
        tokens = encoder(_pixels(size))
    assert tokens.shape == (2, len(prefix) + grid[0] * grid[1], dim)
    assert torch.isfinite(tokens).all()
    assert (encoder.prefix, encoder.grid, encoder.dim, encoder.depth) == (prefix, grid, dim, depth)
    record = encoder.provenance()
    assert record["prefix"] == prefix and record["grid"] == grid and record["image_size"] == size
    assert record["final_norm"] and record["num_prefix"] == len(prefix)
    # the meta device gives the same layout without weights or compute (what `stepcli backbones` shows)
    meta = load_backbone(spec, size, meta=True)
    assert (meta.prefix, meta.grid, meta.dim, meta.depth) == (prefix, grid, dim, depth)


@pytest.mark.parametrize("case", list(CASES))
def test_stand_in_prefix_token(encoders, case):
    """A model without a CLS caches its own pooled embedding or its patch mean as the prefix token."""
    encoder = _encoder(encoders, case)
    with torch.no_grad():
        tokens = encoder(_pixels(CASES[case][1]))
    if encoder.prefix[0] == GLOBAL_AVERAGE:
        torch.testing.assert_close(tokens[:, 0], tokens[:, 1:].mean(dim=1))
    elif encoder.prefix[0] == ATTENTION_POOL:
        assert not torch.allclose(tokens[:, 0], tokens[:, 1:].mean(dim=1), atol=1e-3)


def _backbone_alone(encoder) -> dict[str, torch.Tensor]:
    """The tower's tensors, perturbed so they are not the random init, without any head the tokens
    never pass through (projection, classifier): a checkpoint of the backbone alone."""
    module = encoder.visual if hasattr(encoder, "visual") else encoder.model
    optional = getattr(encoder.tokens, "optional", ())
    generator = torch.Generator().manual_seed(7)
    state = {}
    for key, value in module.state_dict().items():
        if optional and key.startswith(optional):
            continue
        if value.is_floating_point():
            value = value + 0.02 * torch.randn(value.shape, generator=generator)
        state[key] = value.detach().clone().contiguous()
    return state


@pytest.mark.parametrize("case", list(CASES))
def test_checkpoint_round_trip(encoders, case, tmp_path):
    spec, size, _ = CASES[case]
    encoder = _encoder(encoders, case)
    state = _backbone_alone(encoder)
    path = tmp_path / "backbone.safetensors"
    save_file(state, path)
    loaded = load_backbone(f"{spec}:{path}", size)
    assert loaded.weights.startswith("sha256:")
    expected = copy.deepcopy(encoder)
    (expected.visual if hasattr(expected, "visual") else expected.model).load_state_dict(state, strict=False)
    pixels = _pixels(size, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels), expected(pixels))
        assert not torch.allclose(loaded(pixels), encoder(pixels), atol=1e-3)


def test_a_checkpoint_of_another_architecture_names_its_first_tensor(encoders, tmp_path):
    path = tmp_path / "dinov2.safetensors"
    save_file(_backbone_alone(_encoder(encoders, "timm-dinov2-reg4")), path)
    with pytest.raises(StepcliError, match=r"cannot load .* into timm:vit_small_patch16_dinov3: .*tensor '") as err:
        load_backbone(f"timm:vit_small_patch16_dinov3:{path}", 32)
    assert "\n" not in str(err.value)
    with pytest.raises(StepcliError, match=r"into openclip:RN50: .*tensor '"):
        load_backbone(f"openclip:RN50:{path}", 64)


def test_a_whole_clip_checkpoint_loads_its_image_tower(tmp_path):
    """An open_clip checkpoint as open_clip saves it (text tower and all) still loads."""
    torch.manual_seed(3)
    model = open_clip.create_model("RN50", pretrained=None, force_image_size=64)
    torch.save(model.state_dict(), tmp_path / "rn50.pt")
    encoder = load_backbone(f"openclip:RN50:{tmp_path / 'rn50.pt'}", 64, layer=-1)
    pixels = _pixels(64)
    with torch.no_grad():
        maps = model.visual.eval().forward_intermediates(pixels, indices=[4], intermediates_only=True)
        patches = maps["image_intermediates"][0].flatten(2).transpose(1, 2)
        torch.testing.assert_close(encoder(pixels)[:, 1:], patches)


def test_default_backbone_tokens_are_bit_identical_to_open_clips_own_forward():
    """The default backbone's cached tokens must not change (the demo table would): tokens equal, bit
    for bit, open_clip's own model built with the random-init seed and read as before the registry."""
    pixels = _pixels(64)
    encoder = load_backbone("openclip:ViT-S-32", 64)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = open_clip.create_model("ViT-S-32", pretrained=None, force_image_size=64)
    with torch.no_grad():
        out = model.visual.eval().forward_intermediates(
            pixels, indices=[11], stop_early=True, normalize_intermediates=True, intermediates_only=True,
            output_fmt="NLC", output_extra_tokens=True,
        )  # fmt: skip
        expected = torch.cat([out["image_intermediates_prefix"][0], out["image_intermediates"][0]], dim=1)
        assert torch.equal(encoder(pixels), expected)
        cached = encoder.encode_clips([pixels], torch.device("cpu"))[0]
    assert (cached == expected.numpy().astype("float16")).all()


def test_budget_and_layers_on_a_cnn(encoders):
    """A 7x7 CNN map pooled 2x2 is 4x4 (2x3: 4x3); a stage of another width is a block of its own."""
    from stepcli.extract.budget import TokenBudget

    encoder = load_backbone("timm:resnet18", 224, layer=-1, budget=TokenBudget.parse("2"))
    assert encoder.grid == (7, 7) and encoder.num_patches == 16
    clips = encoder.encode_views([_pixels(224)[None]], torch.device("cpu"))[0][0]
    assert clips.shape == (1, 2, 1 + 16, 512)
    wide = load_backbone("timm:resnet18", 224, layer=-3, budget=TokenBudget.parse("2x3"))
    assert (wide.grid, wide.dim, wide.num_patches) == ((14, 14), 256, 7 * 5)
    with pytest.raises(StepcliError, match="different shapes"):
        load_backbone("timm:resnet18", 64, layer=(-2, -3))
    prefix_only = load_backbone("timm:resnet18", 64, budget=TokenBudget.parse("1", "prefix"))
    assert prefix_only.encode_clips([_pixels(64)], torch.device("cpu")).shape == (1, 2, 1, 512)


@pytest.mark.parametrize("model_name", ["mobilenetv2_100", "resnet50", "convnext_tiny"])
def test_a_cnns_last_block_is_its_own_forward_features(model_name, one_thread):
    """Layer -1 of a CNN is the map timm's `forward_features` returns (head conv and norm included),
    as tokens: its global average, then each position; the stages stay selectable by index."""
    import timm

    encoder = load_backbone(f"timm:{model_name}", 64)
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the random-init seed: the same weights, built by timm itself
        model = timm.create_model(model_name, num_classes=0).eval()
    pixels = _pixels(64)
    with torch.no_grad():
        last = encoder(pixels)
        expected = model.forward_features(pixels).flatten(2).transpose(1, 2)
        stem = model.forward_intermediates(pixels, indices=[0], intermediates_only=True)[0]
    assert encoder.dim == model.num_features and encoder.block_note(encoder.depth - 1) == "forward_features"
    assert torch.equal(last[:, 1:], expected) and torch.equal(last[:, 0], expected.mean(dim=1))
    # the stages and the final map read in one pass, as `--layers` and `stepcli backbones` do
    shapes = encoder.block_shapes([0, encoder.depth - 1])
    assert [(s.dim, s.grid) for s in shapes] == [(stem.shape[1], tuple(stem.shape[-2:])), (model.num_features, (2, 2))]
    assert "forward_features" in encoder.provenance()["final_norm"]


def test_several_layers_of_a_transformer_in_one_pass(encoders):
    encoder = load_backbone("timm:vit_small_patch16_dinov3", 32, layer=(-1, -4))
    with torch.no_grad():
        last, fourth = encoder.forward_layers(_pixels(32))
    assert last.shape == fourth.shape == (2, 5 + 4, 384) and not torch.allclose(last, fourth)


def test_an_open_clip_model_whose_text_tower_needs_transformers_builds_its_image_tower(one_thread):
    """roberta-ViT-B-32 (and mt5, nllb, xlm-roberta): the text tower, never used, is not fetched."""
    encoder = load_backbone("openclip:roberta-ViT-B-32", 64)
    with torch.no_grad():
        tokens = encoder(_pixels(64))
    assert tokens.shape == (2, 1 + 4, 768) and encoder.prefix == (CLS,) and torch.isfinite(tokens).all()


@pytest.mark.parametrize(
    "spec, message",
    [
        ("timm:", "is not openclip"),
        ("mystery:resnet18", "is not openclip"),
        ("timm:no_such_model", "has no model"),
        ("openclip:No-Such-Model", "has no model"),
        ("timm:resnet18:/nonexistent/w.safetensors", "not found"),
        ("timm:vit_small_patch16_dinov3:pretrained", "pass the file"),
    ],
)
def test_bad_specs_are_one_line(spec, message):
    with pytest.raises(StepcliError, match=message) as err:
        load_backbone(spec, 32)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("meta", [True, False])
def test_frames_too_small_for_a_patch_grid_are_one_line(meta):
    with pytest.raises(StepcliError, match="--image-size 8: .* cannot encode 8 px frames .*patch size") as err:
        load_backbone("timm:vit_small_patch16_dinov3", 8, meta=meta)
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def demo_videos(tmp_path_factory):
    return tmp_path_factory.mktemp("demo-videos")


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_demo_extract_train_and_shuffle_test(case, demo_videos, tmp_path, one_thread):
    """Each family through the whole pipeline: the demo extracted (4 clips per class: train, val and
    test), STEP trained, its shuffle test run; linear reads the per-frame vector (CLS or stand-in)."""
    spec, size, (prefix, grid, dim, _) = CASES[case]
    cache = tmp_path / "cache"
    ok("extract", "--dataset", "demo", "--size", "4", "--frames", "4", "--image-size", size, "--backbone", spec,
       "--root", demo_videos, "--out", cache, "--workers", "0", "-q")  # fmt: skip
    assert FeatureCache(cache).clip_shape == (4, len(prefix) + grid[0] * grid[1], dim)
    for probe in ("step", "linear"):
        ok("train-probe", "--cache", cache, "--probe", probe, "--out", tmp_path / probe, "--epochs", "2", "-q")
    out = ok("shuffle-test", "--run", tmp_path / "step", "--permutations", "2", "-q").stdout
    assert "reversed" in out
