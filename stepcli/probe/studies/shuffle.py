"""The shuffle test: does a trained probe use frame order at all?

The test clips are evaluated with their frames in the original order, reversed, and in K seeded
random permutations. `predict_logits` reads each batch of cached tokens once and runs every order
on it, so the test costs one read plus K + 2 probe forwards and never touches the backbone.

An order-blind probe (mean pooling, attention without positions) gives the same logits for every
order up to float rounding; the rounding must not show up as "flips", so a prediction counts as
unchanged while the original class is within `TIE_TOLERANCE` of the best logit. On
nearly-symmetric pairs an order-aware probe should do the opposite: reversing a clip turns it
into its partner class, so accuracy there should fall towards zero and the partner rate rise.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from stepcli.cache.reader import FeatureCache
from stepcli.device import resolve_device
from stepcli.errors import StepcliError
from stepcli.files import write_atomic
from stepcli.outputs import check_out
from stepcli.pairs import Pair, partner_sets, read_pairs
from stepcli.probe.evaluation.inference import predict_logits
from stepcli.probe.evaluation.metrics import (
    accuracy,
    bootstrap_intervals,
    confusion_matrix,
    pair_metrics,
    rounded,
    spread,
)
from stepcli.probe.runs.rundir import Run, load_run
from stepcli.probe.studies.page import Page, provenance, reproduce, write_page
from stepcli.probe.studies.report import plot_shuffle, shuffle_markdown
from stepcli.probe.studies.results import (
    METRIC_KEYS,
    ORIGINAL,
    REVERSED,
    SHUFFLED,
    ClassChange,
    OrderMetrics,
    OrderResult,
    ShuffledMetrics,
    ShuffleResult,
    Spread,
    study_relative,
)

TIE_TOLERANCE = 1e-4  # relative to the logit scale; float32 reordering noise is ~1e-6
SHUFFLE_DIR, RESULTS, TABLE, CHART = "shuffle", "results.json", "results.md", "shuffle.png"  # RUN/shuffle/...


@dataclass(frozen=True)
class ShuffleConfig:
    """The options of `shuffle-test`; `compare` and `demo` take `permutations` from here too."""

    permutations: int = 20
    seed: int = 0
    batch_size: int = 64
    device: str = "auto"


def frame_orders(num_frames: int, permutations: int, seed: int) -> dict[str, np.ndarray]:
    """`original`, `reversed` and `shuffle-01..K`: seeded permutations of `range(num_frames)`.

    The identity is redrawn (when T > 1 allows another order) so every shuffle changes something.
    """
    if permutations < 0:
        raise StepcliError(f"--permutations must be >= 0, got {permutations}")
    identity = np.arange(num_frames)
    orders = {ORIGINAL: identity, REVERSED: identity[::-1].copy()}
    rng = np.random.default_rng([seed, 1729])
    for k in range(1, permutations + 1):
        order = rng.permutation(num_frames)
        while num_frames > 1 and np.array_equal(order, identity):
            order = rng.permutation(num_frames)
        orders[f"shuffle-{k:02d}"] = order
    return orders


def stable_predictions(logits: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Argmax of `logits [n, C]`, keeping `reference [n]` where it ties the best within rounding."""
    best = logits.argmax(axis=1)
    top = logits.max(axis=1)
    ref = logits[np.arange(len(logits)), reference]
    tie = ref >= top - TIE_TOLERANCE * np.maximum(1.0, np.abs(top))
    return np.where(tie, reference, best)


_r = rounded


def _order_metrics(
    preds: np.ndarray, logits: np.ndarray, original: np.ndarray, labels: np.ndarray, partners: dict, num_classes: int
) -> tuple[OrderMetrics, np.ndarray]:
    """Metrics of one frame order (from `metrics`, as a run's are) and its per-class accuracy `[C]`."""
    scores = accuracy(logits, labels, preds, num_classes)
    metrics = OrderMetrics(
        top1=scores["top1"],
        mean_class_accuracy=scores["mean_class_accuracy"],
        flip_rate=_r((preds != original).mean()) if len(labels) else None,
        top5=scores["top5"],
        **pair_metrics(logits, labels, preds, partners),
    )
    return metrics, scores["per_class"]


def _spread(values: list[float | None]) -> Spread:
    return Spread(*spread(values))


@dataclass(frozen=True)
class OrderReport:
    """The part of a `ShuffleResult` computed from logits alone (no run, no cache)."""

    original: OrderMetrics
    reversed: OrderMetrics
    shuffled: ShuffledMetrics
    per_order: tuple[OrderResult, ...]
    per_class: dict[str, ClassChange]
    confusion_matrix: list[list[int]]
    intervals: dict[str, dict]


def order_intervals(hits: dict[str, np.ndarray], labels: np.ndarray, partners: dict, num_classes: int) -> dict:
    """Bootstrap intervals per order from each clip's hit (shuffled: its hit rate over the K orders),
    for top-1 and mean per-class accuracy on all clips and top-1 on the clips of pairs."""
    in_pair = np.asarray([int(y) in partners for y in labels], dtype=bool)
    out = {}
    for name, hit in hits.items():
        out[name] = bootstrap_intervals(hit, labels, num_classes)
        if in_pair.any():
            out[name]["pair_top1"] = bootstrap_intervals(hit[in_pair], labels[in_pair], num_classes)["top1"]
    return out


def shuffle_test_logits(
    logits: np.ndarray, labels: np.ndarray, orders: dict[str, np.ndarray], class_names: list[str], pairs: list[Pair]
) -> OrderReport:
    """The shuffle-test report from `logits [K, n, C]` (one slice per entry of `orders`, in order)."""
    partners = partner_sets(pairs, class_names)
    labels = np.asarray(labels, dtype=np.int64)
    original = logits[0].argmax(axis=1)
    per_order, per_class, hits = [], {}, {}
    for (name, order), order_logits in zip(orders.items(), logits, strict=True):
        preds = original if name == ORIGINAL else stable_predictions(order_logits, original)
        hits[name] = (preds == labels).astype(np.float64)
        metrics, class_acc = _order_metrics(preds, order_logits, original, labels, partners, len(class_names))
        per_order.append(OrderResult(name, tuple(int(t) for t in order), metrics))
        per_class[name] = class_acc
    shuffles = [o for o in per_order if o.order not in (ORIGINAL, REVERSED)]
    shuffled = ShuffledMetrics(**{k: _spread([getattr(o.metrics, k) for o in shuffles]) for k in METRIC_KEYS})
    # a class without test clips is NaN in every order and stays NaN
    shuffled_class = np.asarray([per_class[o.order] for o in shuffles]).mean(axis=0) if shuffles else None
    classes = {}
    for c, name in enumerate(class_names):
        orig, rev = per_class[ORIGINAL][c], per_class[REVERSED][c]
        shuf = shuffled_class[c] if shuffled_class is not None else np.nan
        classes[name] = ClassChange(
            num_clips=int((labels == c).sum()), in_pair=c in partners, original=_r(orig), reversed=_r(rev),
            shuffled=_r(shuf), change_reversed=_r(rev - orig), change_shuffled=_r(shuf - orig),
        )  # fmt: skip
    confusion = confusion_matrix(labels, original, len(class_names)).tolist()
    kept = {ORIGINAL: hits[ORIGINAL], REVERSED: hits[REVERSED]}
    if shuffles:
        kept[SHUFFLED] = np.mean([hits[o.order] for o in shuffles], axis=0)
    intervals = order_intervals(kept, labels, partners, len(class_names))
    return OrderReport(per_order[0].metrics, per_order[1].metrics, shuffled, tuple(per_order), classes, confusion,
                       intervals)  # fmt: skip


def shuffle_test(
    run: Run | Path | str,
    cache: FeatureCache | Path | str | None = None,
    cfg: ShuffleConfig | None = None,
    pairs: list[Pair] | None = None,
    pairs_source: str | None = None,
) -> ShuffleResult:
    """Shuffle-test a run on its test clips; `pairs` default to the cache manifest's pairs."""
    if not isinstance(run, Run):
        run = load_run(run)
    cache = run.open_cache(cache)
    run.check_cache(cache)  # refuses tokens from another extraction, naming the difference
    if pairs is None:
        pairs, pairs_source = cache.manifest.pairs, "cache manifest"
    rows = run.rows(cache, "test")
    return shuffle_rows(run, cache, rows, cache.labels[rows], cfg, pairs, pairs_source)


def shuffle_rows(
    run: Run, cache: FeatureCache, rows: np.ndarray, labels: np.ndarray, cfg: ShuffleConfig | None,
    pairs: list[Pair], pairs_source: str | None,
) -> ShuffleResult:  # fmt: skip
    """The shuffle test of `run` on any cache `rows` whose `labels` are the run's class indices."""
    cfg = cfg or ShuffleConfig()
    if len(rows) == 0:
        raise StepcliError(f"run {run.run_dir} has no test clips to shuffle-test")
    orders = frame_orders(cache.layout.num_frames, cfg.permutations, cfg.seed)
    device = resolve_device(cfg.device)
    logits = predict_logits(run.probe.to(device), cache, rows, batch_size=cfg.batch_size, device=device,
                            frame_orders=list(orders.values()))  # fmt: skip
    report = shuffle_test_logits(logits, labels, orders, run.class_names, pairs)
    return ShuffleResult(
        run=str(Path(run.run_dir).resolve()), probe=run.config.probe, num_params=int(run.probe.num_params()),
        cache=str(cache.path.resolve()), num_clips=int(len(rows)), num_frames=cache.layout.num_frames,
        permutations=cfg.permutations, seed=cfg.seed, pairs=tuple(tuple(p) for p in pairs),
        pairs_source=pairs_source or "given", class_names=tuple(run.class_names), **_shallow_fields(report),
    )  # fmt: skip


def _shallow_fields(record: object) -> dict:
    """A dataclass's fields as a dict, without converting nested records (unlike `dataclasses.asdict`)."""
    return {f.name: getattr(record, f.name) for f in fields(record)}


def pairs_for(cache: FeatureCache, pairs_file: Path | None) -> tuple[list[Pair], str]:
    """The pairs to score and where they came from: a ``--pairs`` file, else the cache manifest's."""
    if pairs_file is None:
        return cache.manifest.pairs, "cache manifest"
    return read_pairs(pairs_file, cache.class_names), str(pairs_file)


def run_shuffle_test(
    run_dir: Path, *, cache: Path | None = None, pairs_file: Path | None = None, out: Path | None = None,
    cfg: ShuffleConfig | None = None,
) -> tuple[ShuffleResult, dict[str, Path]]:  # fmt: skip
    """`stepcli shuffle-test`: test the run on its cache (or `cache`), write results to `out` [RUN/shuffle]."""
    run = load_run(run_dir)
    features = run.open_cache(cache)
    pairs, source = pairs_for(features, pairs_file)
    out = check_out(Path(run_dir) / SHUFFLE_DIR if out is None else out, "shuffle test")
    cfg = cfg or ShuffleConfig()
    result = shuffle_test(run, features, cfg, pairs=pairs, pairs_source=source)
    paths = write_shuffle_outputs(result, out)
    config = {"shuffle_test": asdict(cfg), "run": result.run, "cache": result.cache, "pairs_file": pairs_file}
    page = Page(
        title=f"stepcli shuffle-test: {result.probe} on {features.manifest.dataset.name}",
        markdown=paths["md"].read_text(), plots={"shuffle": paths["chart"]},
        config=json.loads(json.dumps(config, default=str)), provenance=provenance(features, run.run_dir),
        commands=reproduce(features, "shuffle-test", out, runs=(run.run_dir,)),
    )  # fmt: skip
    paths["html"] = write_page(out, page)
    return result, paths


def write_shuffle_outputs(result: ShuffleResult, out: Path, study: Path | None = None) -> dict[str, Path]:
    """results.json, its table as results.md and the Figure-1 style chart in `out`; returns their paths.

    In a `study` (a compare's RUN/shuffle), the run is written relative to it where it lies under
    it, so that a rerun of the study into another --out writes the same bytes."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = result.to_dict()
    if study is not None:
        data["run"] = study_relative(result.run, study)
    write_atomic(out / RESULTS, json.dumps(data, indent=2) + "\n")
    write_atomic(out / TABLE, shuffle_markdown(result))
    return {"results": out / RESULTS, "md": out / TABLE, "chart": plot_shuffle(result, out / CHART)}
