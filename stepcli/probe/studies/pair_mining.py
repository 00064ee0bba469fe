"""Mining candidate nearly-symmetric class pairs from a trained order-aware run.

A dataset without a published pair list (which of SSv2's 174 classes need order?) can be asked
directly: reverse the frames of every clip of a split and see where an order-aware probe (STEP)
sends it. A clip of "opening" reversed looks like "closing", so a probe that uses order moves it
there. A clip counts when the reversal *changes* the probe's answer: right in the original order,
another class once reversed (a clip the probe already gets wrong says nothing about order).
Counting, per class pair, the clips moved either way (symmetrised) and dividing by the two
classes' clips ranks the pairs whose difference is the direction of time. An order-blind probe
answers the same in both orders, so it moves nothing: such a run is named as order-blind.

The clips are the run's val split by default: the pairs are chosen there, so that scoring them
afterwards on the test split (`shuffle-test --pairs`) does not reuse the clips that chose them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from stepcli.cache.reader import FeatureCache
from stepcli.device import resolve_device
from stepcli.errors import StepcliError
from stepcli.files import write_atomic
from stepcli.outputs import check_out, quoted
from stepcli.pairs import Pair
from stepcli.probe.evaluation.inference import predict_logits
from stepcli.probe.evaluation.metrics import confusion_matrix
from stepcli.probe.runs.rundir import Run, load_run

PAIRS_TXT, PAIRS_JSON, PAIRS_PNG = "pairs.txt", "pairs.json", "pairs.png"
MINING_SPLITS = ("val", "test")


@dataclass(frozen=True)
class MiningConfig:
    """The options of `stepcli pairs --from-run`."""

    top: int = 20
    split: str = "val"  # one of MINING_SPLITS: val, so that test stays for scoring the mined pairs
    batch_size: int = 64
    device: str = "auto"


@dataclass(frozen=True)
class Reversal:
    """What reversing the frames of a split's clips does to a run's predictions."""

    split: str
    clips: int
    changed: int  # clips whose predicted class changes when reversed
    moved: int  # of those, clips right in the original order (the ones that count)
    confusion: np.ndarray  # [C, C] (true class, reversed prediction) over the moved clips
    per_class: np.ndarray  # [C] clips of each class in the split

    @property
    def order_blind(self) -> bool:
        return self.changed == 0


@dataclass(frozen=True)
class CandidatePair:
    """Two classes and how many clips of each (right in the original order) a reversal sends to the other."""

    a: str
    b: str
    a_to_b: int  # clips of a predicted a, and b once reversed
    b_to_a: int
    clips_a: int
    clips_b: int
    score: float  # (a_to_b + b_to_a) / (clips_a + clips_b)

    @property
    def pair(self) -> Pair:
        return (self.a, self.b)


def reversal_confusion(run: Run, cache: FeatureCache, cfg: MiningConfig) -> Reversal:
    """Where reversing the frames sends each clip of the run's `cfg.split` clips, counting only the
    clips predicted right in the original order whose prediction the reversal changes."""
    if cfg.split not in MINING_SPLITS:
        raise StepcliError(f"--split must be one of {', '.join(MINING_SPLITS)}, got {cfg.split!r}")
    run.check_cache(cache)
    rows = run.rows(cache, cfg.split)
    if len(rows) == 0:
        raise StepcliError(f"run {quoted(run.run_dir)} has no {cfg.split} clips to mine pairs on; try --split test")
    reverse = np.arange(cache.layout.num_frames)[::-1].copy()
    original = np.arange(cache.layout.num_frames)
    device = resolve_device(cfg.device)
    logits = predict_logits(run.probe.to(device), cache, rows, batch_size=cfg.batch_size, device=device,
                            frame_orders=[original, reverse])  # fmt: skip
    before, after = logits[0].argmax(axis=1), logits[1].argmax(axis=1)
    labels = cache.labels[rows]
    changed = before != after
    moved = changed & (before == labels)
    classes = len(cache.class_names)
    return Reversal(
        split=cfg.split, clips=len(rows), changed=int(changed.sum()), moved=int(moved.sum()),
        confusion=confusion_matrix(labels[moved], after[moved], classes),
        per_class=np.bincount(labels, minlength=classes),
    )  # fmt: skip


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


def write_pairs(
    candidates: list[CandidatePair], top: int, out: Path, title: str, reversal: Reversal
) -> dict[str, Path]:
    """pairs.txt (the top pairs, in the format `--pairs` reads), pairs.json (every candidate), pairs.png."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = candidates[:top]
    lines = [f"# {title}", "# ranked by the share of clips a frame reversal moves between the two classes"]
    write_atomic(out / PAIRS_TXT, "\n".join(lines + [f"{c.a},{c.b}" for c in chosen]) + "\n")
    record = {"source": title, "split": reversal.split, "clips": reversal.clips, "changed": reversal.changed,
              "moved": reversal.moved, "candidates": [asdict(c) for c in candidates]}  # fmt: skip
    write_atomic(out / PAIRS_JSON, json.dumps(record, indent=2) + "\n")
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
    ax.set_xlabel("share of the pair's clips moved by reversing their frames")
    ax.set_title("Candidate nearly-symmetric pairs (reversal confusion)", fontsize=10)
    if candidates:
        ax.legend(fontsize=8, loc="lower right")
    fig.savefig(path)
    return Path(path)


def mine_pairs(
    run_dir: Path, out: Path | None = None, cfg: MiningConfig | None = None, cache: Path | None = None
) -> tuple[list[CandidatePair], dict[str, Path], Reversal]:
    """`stepcli pairs --from-run`: rank candidate pairs of a run on its `cfg.split` clips of `cache`
    [the run's], write them to `out` [RUN/pairs]; also what the reversal did (an order-blind run
    yields no pairs)."""
    cfg = cfg or MiningConfig()
    if cfg.split not in MINING_SPLITS:
        raise StepcliError(f"--split must be one of {', '.join(MINING_SPLITS)}, got {cfg.split!r}")
    run = load_run(run_dir)
    features = run.open_cache(cache)  # at the layer the probe was trained on
    out = check_out(Path(run_dir) / "pairs" if out is None else out, "pair mining")
    reversal = reversal_confusion(run, features, cfg)
    candidates = rank_pairs(reversal.confusion, reversal.per_class, features.class_names)
    title = f"pairs mined from run {Path(run_dir).resolve()} ({run.config.probe}) on its {cfg.split} split"
    paths = write_pairs(candidates, cfg.top, out, title, reversal)
    return candidates[: cfg.top], paths, reversal
