"""Which frames decide: per probe, test accuracy when one frame is replaced by a copy of its
neighbour, and for probes with one readout token (STEP's global CLS) its attention per frame.

Replacing frame t by frame t-1 (frame 0 by frame 1) keeps the clip's length and every other
frame, and removes what frame t alone shows: an order-blind probe loses only that frame's content,
an order-aware one may also lose the transition. Everything is computed from the cache.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from stepcli.cache.reader import FeatureCache
from stepcli.device import resolve_device
from stepcli.errors import StepcliError
from stepcli.files import write_atomic
from stepcli.outputs import check_out, quoted
from stepcli.pairs import Pair, partner_sets
from stepcli.probe.data import fixed_batches, iterate_batches
from stepcli.probe.evaluation.inference import predict_logits
from stepcli.probe.evaluation.metrics import pair_metrics, rounded
from stepcli.probe.runs.rundir import Run, load_run
from stepcli.probe.studies.plots import plot_frame_attention, plot_frame_drop
from stepcli.probe.studies.report import fmt, markdown_table
from stepcli.probe.studies.results import FrameAttention, FrameDrop, row_run
from stepcli.probe.studies.seeds import one_run

FRAMES_DIR = "frames"


def neighbour_maps(num_frames: int) -> list[np.ndarray]:
    """For each t, the frame index map that feeds frame t-1 (frame 1 for t = 0) in place of frame t."""
    if num_frames < 2:
        raise StepcliError("a clip of one frame has no neighbour to copy")
    maps = []
    for t in range(num_frames):
        index = np.arange(num_frames)
        index[t] = t - 1 if t else 1
        maps.append(index)
    return maps


def frame_drop(run: Run, label: str, cache: FeatureCache, pairs: list[Pair], device: str) -> FrameDrop:
    """Test accuracy of `run` with its frames intact and with each frame replaced by its neighbour."""
    rows = run.rows(cache, "test")
    labels = cache.labels[rows]
    maps = [np.arange(cache.layout.num_frames), *neighbour_maps(cache.layout.num_frames)]
    torch_device = resolve_device(device)
    logits = predict_logits(run.probe.to(torch_device), cache, rows, device=torch_device, frame_orders=maps,
                            frame_maps=True)  # fmt: skip
    partners = partner_sets(pairs, run.class_names)
    top1, pair = [], []
    for order_logits in logits:
        preds = order_logits.argmax(axis=1)
        top1.append(rounded((preds == labels).mean()))
        pair.append(pair_metrics(order_logits, labels, preds, partners)["pair_top1"])
    return FrameDrop(label, str(run.run_dir), top1[0], pair[0], tuple(top1[1:]), tuple(pair[1:]))


@torch.no_grad()
def frame_attention(run: Run, label: str, cache: FeatureCache, batch_size: int = 64) -> FrameAttention | None:
    """The readout token's attention per frame on the test clips, averaged per class; None when the
    probe has no single readout token."""
    rows = run.rows(cache, "test")
    probe = run.probe.cpu().eval()
    masses = []
    for tokens, _ in iterate_batches(cache, fixed_batches(rows, batch_size)):
        mass = probe.frame_attention(tokens)
        if mass is None:
            return None
        masses.append(mass.float().numpy())
    mass, labels = np.concatenate(masses), cache.labels[rows]
    per_class = tuple(
        tuple(rounded(v) for v in mass[labels == c].mean(axis=0)) if (labels == c).any() else (None,) * mass.shape[1]
        for c in range(len(run.class_names))
    )
    return FrameAttention(label, tuple(run.class_names), per_class)


def run_frames(
    compare_dir: Path, cache: Path | None = None, device: str = "auto", out: Path | None = None
) -> dict[str, Path]:
    """Frame-drop curves of every probe of a comparison (its comparison.json) and the attention per
    frame of those with a readout token; tables and plots in `out` [COMPARE/frames]."""
    table = Path(compare_dir) / "comparison.json"
    if not table.is_file():
        raise StepcliError(
            f"{quoted(compare_dir)} holds no comparison.json; run `stepcli compare --out {quoted(compare_dir)}` first"
        )
    try:
        data = json.loads(table.read_text())
        rows, cache_path, pairs = data["rows"], data["cache"], data["pairs"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise StepcliError(f"{table} is damaged ({type(err).__name__}); rerun `stepcli compare`") from None
    out = check_out(Path(compare_dir) / FRAMES_DIR if out is None else out, "frames study")
    path = cache or cache_path
    caches: dict[int, FeatureCache] = {}  # by layer: each run reads the layer it was trained on
    pairs = [tuple(p) for p in pairs]
    drops, attentions = [], []
    for row in rows:
        run = load_run(one_run(row_run(compare_dir, row)))
        features = caches.setdefault(run.layer, FeatureCache(path, layer=run.layer))
        run.check_cache(features)
        drops.append(frame_drop(run, row["probe"], features, pairs, device))
        attention = frame_attention(run, row["probe"], features)
        if attention is not None:
            attentions.append(attention)
    return write_frames_outputs(out, drops, attentions)


def write_frames_outputs(out: Path, drops: list[FrameDrop], attentions: list[FrameAttention]) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    frames = len(drops[0].replaced_top1)
    header = ["probe", "intact", *(f"frame {t} replaced" for t in range(frames))]
    rows = [[d.probe, fmt(d.top1, "pct"), *(fmt(v, "pct") for v in d.replaced_top1)] for d in drops]
    paths = {"md": out / "frames.md", "json": out / "frames.json"}
    title = "Test top-1 with frame t replaced by a copy of frame t-1 (frame 0 by frame 1)\n\n"
    write_atomic(paths["md"], title + markdown_table(header, rows))
    record = {"drops": [asdict(d) for d in drops], "attention": [asdict(a) for a in attentions]}
    write_atomic(paths["json"], json.dumps(record, indent=2) + "\n")
    paths["frame_drop"] = plot_frame_drop(drops, out / "frame_drop.png")
    for attention in attentions:
        name = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in attention.probe)
        paths[f"attention_{name}"] = plot_frame_attention(attention, out / f"attention_{name}.png")
    return paths
