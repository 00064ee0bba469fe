"""Apply a trained probe to new videos: decode, run the backbone the run's cache was made with,
then the probe. The only place stage two runs a backbone (DESIGN §2)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stepcli import StepcliError
from stepcli.device import resolve_device
from stepcli.extract.backbones import RANDOM_INIT, load_backbone
from stepcli.extract.pipeline import _encode
from stepcli.extract.video import VideoError, sample_clip
from stepcli.probe.run import Run


@dataclass
class Prediction:
    video: str
    top: list[tuple[str, float]]  # (class name, probability), most likely first


def backbone_for_run(run: Run, device: torch.device):
    """The frozen encoder that made the run's cache, refusing one whose weights changed since."""
    extraction = run.config["cache"]["extraction"]
    encoder = load_backbone(extraction["backbone"], extraction["image_size"], extraction["layer"])
    if encoder.weights != extraction["weights"] and extraction["weights"] != RANDOM_INIT:
        raise StepcliError(
            f"the weights behind {extraction['backbone']!r} changed since the cache was made "
            f"({extraction['weights']} -> {encoder.weights}); restore them or re-extract and retrain"
        )
    return encoder.to(device)


@torch.no_grad()
def predict_videos(run: Run, videos: list[Path], top_k: int = 5, device: str = "auto") -> list[Prediction]:
    torch_device = resolve_device(device)
    encoder = backbone_for_run(run, torch_device)
    num_frames = int(run.config["cache"]["extraction"]["num_frames"])
    probe = run.probe.to(torch_device)
    predictions = []
    for video in videos:
        try:
            frames = sample_clip(video, num_frames).frames
        except VideoError as err:
            raise StepcliError(f"{video}: {err}") from None
        # float16 like the cache, so a video and its cached clip give the same logits
        tokens = torch.from_numpy(_encode(encoder, [encoder.preprocess(frames)], torch_device)).to(torch_device)
        probs = torch.softmax(probe(tokens).float(), dim=-1)[0].cpu().numpy()
        order = np.argsort(-probs)[:top_k]
        predictions.append(Prediction(str(video), [(run.class_names[i], float(probs[i])) for i in order]))
    return predictions
