"""Mining candidate nearly-symmetric class pairs from a trained order-aware run.

A dataset without a published pair list (which of SSv2's 174 classes need order?) can be asked
directly: reverse the frames of every test clip and see where an order-aware probe (STEP) sends
it. A clip of "opening" reversed looks like "closing", so a probe that uses order moves it there;
counting, per class pair, the clips moved either way (the reversal confusion, symmetrised) and
dividing by the two classes' clips ranks the pairs whose difference is the direction of time.
An order-blind probe moves nothing, so its ranking is empty: mine from an order-aware run.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from stepcli.cache.reader import FeatureCache
from stepcli.device import resolve_device
from stepcli.files import write_atomic
from stepcli.pairs import Pair
from stepcli.probe.evaluation.inference import predict_logits
from stepcli.probe.evaluation.metrics import confusion_matrix
from stepcli.probe.runs.rundir import Run, load_run

PAIRS_TXT, PAIRS_JSON, PAIRS_PNG = "pairs.txt", "pairs.json", "pairs.png"


@dataclass(frozen=True)
class MiningConfig:
    """The options of `stepcli pairs --from-run`."""

    top: int = 20
    batch_size: int = 64
    device: str = "auto"


@dataclass(frozen=True)
class CandidatePair:
    """Two classes and how many test clips of each a reversal sends to the other."""

    a: str
    b: str
    a_to_b: int  # clips of a predicted as b once reversed
    b_to_a: int
    clips_a: int
    clips_b: int
    score: float  # (a_to_b + b_to_a) / (clips_a + clips_b)

    @property
    def pair(self) -> Pair:
        return (self.a, self.b)


def reversal_confusion(run: Run, cache: FeatureCache, cfg: MiningConfig) -> tuple[np.ndarray, np.ndarray]:
    """`[C, C]` counts of (true class, class predicted with reversed frames) over the run's test clips,
    and the clips per class."""
    run.check_cache(cache)
    rows = run.rows(cache, "test")
    reverse = np.arange(cache.layout.num_frames)[::-1].copy()
    device = resolve_device(cfg.device)
    logits = predict_logits(run.probe.to(device), cache, rows, batch_size=cfg.batch_size, device=device,
                            frame_orders=[reverse])[0]  # fmt: skip
    labels = cache.labels[rows]
    confusion = confusion_matrix(labels, logits.argmax(axis=1), len(cache.class_names))
    return confusion, np.bincount(labels, minlength=len(cache.class_names))


def rank_pairs(confusion: np.ndarray, clips: np.ndarray, class_names: list[str]) -> list[CandidatePair]:
    """Every pair that a reversal moves at least one clip between, best candidates first."""
    candidates = []
    for i in range(len(class_names)):
        for j in range(i + 1, len(class_names)):
            moved = int(confusion[i, j] + confusion[j, i])
            if moved:
                score = round(moved / max(int(clips[i] + clips[j]), 1), 6)
                candidates.append(CandidatePair(class_names[i], class_names[j], int(confusion[i, j]),
                                                int(confusion[j, i]), int(clips[i]), int(clips[j]), score))  # fmt: skip
    return sorted(candidates, key=lambda c: (-c.score, -(c.a_to_b + c.b_to_a), c.a, c.b))


def write_pairs(candidates: list[CandidatePair], top: int, out: Path, title: str) -> dict[str, Path]:
    """pairs.txt (the top pairs, in the format `--pairs` reads), pairs.json (every candidate), pairs.png."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = candidates[:top]
    lines = [f"# {title}", "# ranked by the share of clips a frame reversal moves between the two classes"]
    write_atomic(out / PAIRS_TXT, "\n".join(lines + [f"{c.a},{c.b}" for c in chosen]) + "\n")
    write_atomic(out / PAIRS_JSON, json.dumps({"source": title, "candidates": [asdict(c) for c in candidates]},
                                              indent=2) + "\n")  # fmt: skip
    return {"pairs": out / PAIRS_TXT, "candidates": out / PAIRS_JSON, "plot": plot_pairs(chosen, out / PAIRS_PNG)}


def plot_pairs(candidates: list[CandidatePair], path: Path) -> Path:
    """Horizontal bars: per candidate pair, the clips moved a -> b and b -> a, as shares of the pair's clips."""
    from matplotlib.figure import Figure  # deferred: matplotlib takes a second to import; only plots need it

    fig = Figure(figsize=(7.0, max(2.5, 0.35 * len(candidates) + 1.2)), dpi=110, layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(candidates))[::-1]
    total = np.asarray([max(c.clips_a + c.clips_b, 1) for c in candidates], dtype=float)
    forward = np.asarray([c.a_to_b for c in candidates]) / total
    backward = np.asarray([c.b_to_a for c in candidates]) / total
    ax.barh(y, forward, color="#4c72b0", label="a → b when reversed")
    ax.barh(y, backward, left=forward, color="#dd8452", label="b → a when reversed")
    ax.set_yticks(y, [f"{c.a} / {c.b}" for c in candidates], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the pair's test clips moved by reversing their frames")
    ax.set_title("Candidate nearly-symmetric pairs (reversal confusion)", fontsize=10)
    if candidates:
        ax.legend(fontsize=8, loc="lower right")
    fig.savefig(path)
    return Path(path)


def mine_pairs(run_dir: Path, out: Path | None = None, cfg: MiningConfig | None = None):
    """`stepcli pairs --from-run`: rank candidate pairs of a run, write them to `out` [RUN/pairs]."""
    cfg = cfg or MiningConfig()
    run = load_run(run_dir)
    cache = run.open_cache()  # at the layer the probe was trained on
    confusion, clips = reversal_confusion(run, cache, cfg)
    candidates = rank_pairs(confusion, clips, cache.class_names)
    paths = write_pairs(candidates, cfg.top, Path(run_dir) / "pairs" if out is None else out,
                        f"pairs mined from run {Path(run_dir).resolve()} ({run.config.probe})")  # fmt: skip
    return candidates[: cfg.top], paths
