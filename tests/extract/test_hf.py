"""``hf:`` encoders: small configs with random weights through transformers' real classes, saved
with `save_pretrained` by the test and loaded back as ``hf:<dir>`` (nothing is downloaded)."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from conftest import fails, ok

from stepcli.cache.reader import FeatureCache
from stepcli.extract.encoders import load_backbone
from stepcli.extract.encoders.base import ATTENTION_POOL, CLS, REGISTER

transformers = pytest.importorskip("transformers")
SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
# name: config, image processor, image size, prefix
CASES = {
    "dinov2": (lambda: transformers.Dinov2Config(**SMALL, patch_size=14, image_size=28),
               lambda: transformers.BitImageProcessor(), 28, (CLS,)),
    "dinov2-reg": (lambda: transformers.Dinov2WithRegistersConfig(**SMALL, patch_size=14, image_size=28,
                                                                  num_register_tokens=2),
                   lambda: transformers.BitImageProcessor(), 28, (CLS, REGISTER, REGISTER)),
    "siglip": (lambda: transformers.SiglipVisionConfig(**SMALL, patch_size=16, image_size=32),
               lambda: transformers.SiglipImageProcessor(), 32, (ATTENTION_POOL,)),
}  # fmt: skip


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict:
    """Each case's random-init model and its image processor, saved as a checkpoint directory."""
    saved = {}
    for case, (config, processor, _, _) in CASES.items():
        path = tmp_path_factory.mktemp(case)
        torch.manual_seed(0)
        model = transformers.AutoModel.from_config(config()).eval()
        model.save_pretrained(path)
        processor().save_pretrained(path)
        saved[case] = (path, model)
    return saved


@pytest.mark.parametrize("case", list(CASES))
def test_tokens_are_the_models_own_hidden_states_after_its_final_norm(checkpoints, case, one_thread):
    path, model = checkpoints[case]
    _, processor, size, prefix = CASES[case]
    encoder = load_backbone(f"hf:{path}", size * 2)  # twice the config's size: position embeddings interpolated
    assert (encoder.prefix, encoder.grid, encoder.dim, encoder.depth) == (prefix, (4, 4), 32, 2)
    assert encoder.preprocess.mean == tuple(processor().image_mean) and encoder.weights.startswith("model.safetensors=")
    pixels = torch.randn(2, 3, size * 2, size * 2, generator=torch.Generator().manual_seed(0))
    kwargs = {"interpolate_pos_encoding": True} if case == "siglip" else {}
    with torch.no_grad():
        out = model(pixel_values=pixels, **kwargs)
        tokens = encoder(pixels)
    if case == "siglip":  # no CLS: the attention pool's embedding stands in, then the patches
        torch.testing.assert_close(tokens[:, 0], out.pooler_output)
        torch.testing.assert_close(tokens[:, 1:], out.last_hidden_state)
    else:
        torch.testing.assert_close(tokens, out.last_hidden_state)
    meta = load_backbone(f"hf:{path}", size * 2, meta=True)  # `stepcli backbones --spec`: no weights read
    assert (meta.prefix, meta.grid, meta.dim, meta.depth) == (prefix, (4, 4), 32, 2)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["dinov2", "siglip"])
def test_an_hf_encoder_extracts_trains_step_and_shuffle_tests(checkpoints, case, tmp_path, one_thread):
    path, _ = checkpoints[case]
    size, prefix = CASES[case][2], CASES[case][3]
    cache = tmp_path / "cache"
    ok("extract", "--dataset", "demo", "--size", "4", "--frames", "4", "--image-size", size, "--backbone",
       f"hf:{path}", "--root", tmp_path / "videos", "--out", cache, "--workers", "0", "-q")  # fmt: skip
    assert FeatureCache(cache).clip_shape == (4, len(prefix) + 4, 32)
    assert json.loads((cache / "manifest.json").read_text())["versions"]["transformers"] == transformers.__version__
    ok("train-probe", "--cache", cache, "--probe", "step", "--out", tmp_path / "step", "--epochs", "2", "-q")
    assert "reversed" in ok("shuffle-test", "--run", tmp_path / "step", "--permutations", "2", "-q").stdout


def test_a_bad_hf_name_is_one_line(tmp_path):
    assert "no checkpoint directory" in fails("backbones", "--spec", f"hf:{tmp_path / 'nothing-here'}")
    assert "has no config.json" in fails("backbones", "--spec", f"hf:{tmp_path}")
    line = fails("backbones", "--spec", "hf:nobody/no-such-model")
    assert "not in the local Hugging Face cache" in line and "never downloads" in line


def test_a_missing_transformers_extra_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` fails, as without the extra
    assert "pip install 'stepcli[hf]'" in fails("backbones", "--spec", f"hf:{tmp_path}")
