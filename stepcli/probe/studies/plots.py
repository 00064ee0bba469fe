"""The study plots beyond the comparison's own: per-pair accuracy (the paper's Figure 3), frame-drop
curves and a readout token's attention per frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stepcli.pairs import Pair
from stepcli.probe.studies.figures import new_figure, plotted
from stepcli.probe.studies.results import FrameAttention, FrameDrop


def plot_per_pair(per_class: dict[str, dict[str, float | None]], pairs: list[Pair], path: Path) -> Path:
    """Each nearly-symmetric class's test accuracy for every probe side by side, one bar group per
    class, partners next to each other (`per_class`: probe -> class -> accuracy)."""
    classes = [name for pair in pairs for name in pair]
    probes = list(per_class)
    fig = new_figure(max(8.0, 0.9 * len(classes) + 2), 4.8)
    ax = fig.subplots()
    width = 0.8 / max(1, len(probes))
    x = np.arange(len(classes))
    for i, probe in enumerate(probes):
        values = [100 * plotted(per_class[probe].get(name)) for name in classes]
        ax.bar(x + (i - (len(probes) - 1) / 2) * width, values, width, label=probe)
    for boundary in range(2, len(classes), 2):  # a thin line between pairs
        ax.axvline(boundary - 0.5, color="grey", lw=0.6, alpha=0.5)
    ax.set_xticks(x, classes, rotation=30, ha="right")
    ax.set_ylabel("test top-1 of the class (%)")
    ax.set_ylim(0, 105)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", fontsize=8, ncols=min(6, len(probes)))
    ax.set_title("Per-class accuracy on nearly-symmetric pairs (partners side by side)")
    fig.savefig(path)
    return path


def plot_frame_drop(drops: list[FrameDrop], path: Path) -> Path:
    """Test top-1 with frame t replaced by its neighbour, one line per probe; dotted: frames intact."""
    fig = new_figure(8, 4.4)
    ax = fig.subplots()
    for drop in drops:
        frames = np.arange(len(drop.replaced_top1))
        line = ax.plot(frames, [100 * plotted(v) for v in drop.replaced_top1], marker="o", label=drop.probe)[0]
        ax.axhline(100 * plotted(drop.top1), color=line.get_color(), ls=":", lw=1)
    ax.set_xticks(np.arange(len(drops[0].replaced_top1)))
    ax.set_xlabel("frame t replaced by a copy of frame t-1 (frame 0 by frame 1)")
    ax.set_ylabel("test top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Which frames decide: accuracy with one frame replaced (dotted: all frames intact)")
    fig.savefig(path)
    return path


def plot_frame_attention(attention: FrameAttention, path: Path) -> Path:
    """A class x frame heatmap of the readout token's mean attention mass per frame on test clips."""
    mass = np.asarray([[plotted(v) for v in row] for row in attention.mass])
    fig = new_figure(7, 0.35 * len(attention.class_names) + 2)
    ax = fig.subplots()
    image = ax.imshow(mass, aspect="auto", cmap="viridis")
    ax.set_xticks(np.arange(mass.shape[1]))
    ax.set_yticks(np.arange(len(attention.class_names)), attention.class_names)
    ax.set_xlabel("frame")
    fig.colorbar(image, ax=ax, label="attention mass of the CLS token")
    ax.set_title(f"{attention.probe}: where the readout token looks, mean per test class")
    fig.savefig(path)
    return path
