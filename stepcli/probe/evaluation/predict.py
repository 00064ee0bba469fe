"""Apply a trained probe to new videos: decode, run the backbone the run's cache was made with,
then the probe. The only place stage two runs a backbone, through stage one's public encoder.

A video is turned into the views its cache holds for a test clip (the same sampler, temporal clips,
spatial crops and token budget) and scored as evaluation scores a cached clip: the softmax averaged
over the views. So a video that is in the cache gets the run's own prediction for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stepcli.device import resolve_device
from stepcli.errors import StepcliError
from stepcli.extract.budget import TokenBudget
from stepcli.extract.encoders import RANDOM_INIT, FrameEncoder, load_backbone
from stepcli.extract.video import VideoError, sample_clip
from stepcli.extract.views import clip_views
from stepcli.probe.evaluation.inference import average_views
from stepcli.probe.runs.rundir import Run, load_run


@dataclass(frozen=True)
class PredictConfig:
    top_k: int = 5
    device: str = "auto"


@dataclass
class Prediction:
    video: str
    top: list[tuple[str, float]]  # (class name, probability), most likely first
    error: str | None = None  # why the video could not be read (then `top` is empty)


def backbone_for_run(run: Run, device: torch.device) -> FrameEncoder:
    """The frozen encoder that made the run's cache, refusing one whose weights changed since."""
    extraction = run.config.cache.extraction
    # the layer the probe read and the cache's token budget: the probe sees tokens shaped as it was trained on
    budget = TokenBudget.parse(extraction.pool, extraction.tokens)
    encoder = load_backbone(extraction.backbone, extraction.image_size, run.layer, budget)
    if encoder.weights != extraction.weights and extraction.weights != RANDOM_INIT:
        raise StepcliError(
            f"the weights behind {extraction.backbone!r} changed since the cache was made "
            f"({extraction.weights} -> {encoder.weights}); restore them or re-extract and retrain"
        )
    return encoder.to(device)


@torch.no_grad()
def predict_videos(run: Run, videos: list[Path], top_k: int = 5, device: str = "auto") -> list[Prediction]:
    """Top-k classes of each video; a video that cannot be decoded gets its reason in `error`, so
    that one bad file among many does not cost the predictions of the others."""
    missing = [str(v) for v in videos if not Path(v).is_file()]
    if missing:  # before the backbone is loaded, which takes a while
        raise StepcliError(
            f"{missing[0]}: file not found" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    torch_device = resolve_device(device)
    encoder = backbone_for_run(run, torch_device)
    views = run.config.cache.extraction.views
    num_frames = run.config.layout.num_frames
    probe = run.probe.to(torch_device)
    predictions = []
    for video in videos:
        try:
            frames = sample_clip(video, num_frames, num_clips=views.clips).frames
        except VideoError as err:
            predictions.append(Prediction(str(video), [], str(err).splitlines()[0]))
            continue
        pixels = clip_views(frames, views, encoder.preprocess, "test", str(video))  # [K, T, 3, S, S]
        # float16 like the cache, so a video and its cached clip give the same logits
        tokens = torch.from_numpy(encoder.encode_views([pixels], torch_device)[0][0]).to(torch_device)
        logits = probe(tokens).float().cpu().numpy()  # [K, C]
        probs = np.exp(average_views(logits, np.zeros(len(logits), dtype=np.int64), 1)[0])
        order = np.argsort(-probs)[:top_k]
        predictions.append(Prediction(str(video), [(run.class_names[i], float(probs[i])) for i in order]))
    return predictions


def predict_run(run_dir: Path, videos: list[Path], cfg: PredictConfig | None = None) -> list[Prediction]:
    """`stepcli predict`: load the run and predict each video."""
    cfg = cfg or PredictConfig()
    return predict_videos(load_run(run_dir), videos, top_k=cfg.top_k, device=cfg.device)
