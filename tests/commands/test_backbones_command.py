"""`stepcli backbones`, the one-line refusals of `extract` for bad backbones, and a cache from a
backbone without a CLS token through the probes that read a per-frame vector."""

from __future__ import annotations

import json
import shutil

import pytest
import timm
import torch
from conftest import fails, fails_in_process, make_demo_cache, ok
from safetensors.torch import save_file

from stepcli.cache.reader import FeatureCache


def test_listing_names_each_family_with_an_example():
    out = ok("backbones", "siglip").stdout
    assert "openclip: openclip:<model>[:<tag or file>]" in out and "ViT-B-16-SigLIP2" in out
    assert "timm: timm:<model>[:<file>|pretrained]" in out and "vit_base_patch16_siglip_224" in out
    assert "global-average" in out  # what stands in for a missing CLS is said where the models are listed


def test_spec_shows_layout_blocks_parameters_and_cache_size():
    out = ok("backbones", "--spec", "openclip:ViT-S-32").stdout  # the default backbone, at 224 px, 8 frames
    assert "P=1 (cls) + N=49 (grid 7x7" in out and "D=384" in out and "final norm ln_post" in out
    assert "(--layers -12..11)" in out and "0-11: P=1 + 7x7 patches, D=384" in out
    assert "300.1 KiB per clip at --frames 8" in out  # 8 x 50 x 384 x 2 B + 8 x 16 B
    assert "M in the image tower" in out


def test_spec_of_a_cnn_lists_its_stages_and_the_pooled_grid():
    out = ok("backbones", "--spec", "timm:resnet18", "--pool", "2x2", "--frames", "4").stdout
    assert "P=1 (global-average) + N=16 (grid 7x7, pool 2x2" in out and "D=512" in out
    assert "4: P=1 + 7x7 patches, D=512" in out and "3: P=1 + 14x14 patches, D=256" in out


@pytest.mark.parametrize(
    "spec, message",
    [
        ("timm:", "is not openclip:<model>"),
        ("timm:resnet_nope", "timm has no model 'resnet_nope'"),
        ("openclip:RN-nope", "open_clip has no model 'RN-nope'"),
    ],
)
def test_a_spec_naming_no_model_is_one_line(spec, message):
    assert message in fails("backbones", "--spec", spec)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    return tmp_path_factory.mktemp("demo-videos")


def _extract(videos, out, *args) -> list[str]:
    return ["extract", "--dataset", "demo", "--size", "1", "--root", videos, "--out", out, "--workers", "0", *args]


def test_extract_refuses_bad_backbones_in_one_line(videos, tmp_path):
    assert "is not openclip" in fails(*_extract(videos, tmp_path / "a", "--backbone", "vit_small"))
    torch.manual_seed(0)
    save_file(timm.create_model("resnet18", num_classes=0).state_dict(), tmp_path / "r18.safetensors")
    line = fails(*_extract(videos, tmp_path / "b", "--backbone", f"timm:resnet34:{tmp_path / 'r18.safetensors'}"))
    assert "into timm:resnet34: the file lacks tensor 'layer1.2.conv1.weight'" in line
    line = fails(*_extract(videos, tmp_path / "c", "--backbone", "timm:vit_small_patch16_dinov3", "--image-size", "8"))
    assert "cannot encode 8 px frames" in line


def test_the_real_console_script_refuses_a_model_without_a_patch_grid(videos, tmp_path):
    args = _extract(videos, tmp_path / "c", "--backbone", "timm:vit_small_patch16_dinov3", "--image-size", "8")
    assert "cannot encode 8 px frames" in fails_in_process(*args)


@pytest.fixture(scope="module")
def cnn_cache(tmp_path_factory, one_thread):
    """A demo cache from a CNN: a 2x2 map per frame, its global average as the one prefix token."""
    out = tmp_path_factory.mktemp("cnn") / "cache"
    make_demo_cache(out, backbone="timm:resnet18", image_size=64, num_frames=4)
    return out


def test_a_cnn_cache_records_its_stand_in(cnn_cache):
    extraction = json.loads((cnn_cache / "manifest.json").read_text())["extraction"]
    assert extraction["prefix"] == ["global-average"] and extraction["grid"] == [2, 2]
    assert extraction["final_norm"].startswith("last block: forward_features")
    assert FeatureCache(cnn_cache).clip_shape == (4, 1 + 4, 512)
    assert "(1 prefix [global-average] + 4 patches)" in ok("inspect", cnn_cache).stdout


def test_a_resume_into_a_cache_whose_layer_minus_one_was_the_last_stage_is_refused(cnn_cache, tmp_path):
    """Caches made before held a CNN's last stage at layer -1 and said so in `final_norm`; the same
    command now caches `forward_features` there, so resuming into such a cache must not mix the two."""
    old = tmp_path / "old"
    shutil.copytree(cnn_cache, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["extraction"]["final_norm"] = "none (stage outputs as the model gives them)"  # as written before
    (old / "manifest.json").write_text(json.dumps(manifest))
    line = fails("extract", "--dataset", "demo", "--size", "4", "--frames", "4", "--image-size", "64", "--backbone",
                 "timm:resnet18", "--root", cnn_cache.parent / "demo-videos", "--out", old, "--workers", "0", "-q")  # fmt: skip
    assert "another configuration (final_norm: 'none (stage outputs" in line


@pytest.mark.parametrize("probe", ["linear", "logreg", "knn"])
def test_probes_reading_a_frame_vector_train_on_the_stand_in(cnn_cache, tmp_path, probe):
    ok("train-probe", "--cache", cnn_cache, "--probe", probe, "--out", tmp_path / "run", "--epochs", "1", "-q")
    assert (tmp_path / "run" / "config.json").is_file()


def test_step_with_frame_cls_is_refused_without_a_cls(cnn_cache, tmp_path):
    line = fails("train-probe", "--cache", cnn_cache, "--probe", "step", "--cls", "frame", "--out", tmp_path / "r")
    assert "with cls=frame reads each frame's own CLS token" in line and "global-average" in line
    line = fails("train-probe", "--cache", cnn_cache, "--probe", "step", "--sweep", "cls=global,frame", "--out",
                 tmp_path / "s")  # fmt: skip
    assert "cls=frame reads each frame's own CLS token" in line and not (tmp_path / "s").exists()
