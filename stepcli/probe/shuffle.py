"""The shuffle test (DESIGN §6): does a trained probe use frame order at all?

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

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stepcli import StepcliError
from stepcli.cache.reader import FeatureCache
from stepcli.probe.evaluate import predict_logits
from stepcli.probe.metrics import DECIMALS, confusion_matrix, mean_class_accuracy, per_class_accuracy
from stepcli.probe.run import Run, check_cache, load_run

ORIGINAL, REVERSED, SHUFFLED = "original", "reversed", "shuffled"
TIE_TOLERANCE = 1e-4  # relative to the logit scale; float32 reordering noise is ~1e-6
RESULTS = "results.json"

Pair = tuple[str, str]


@dataclass
class ShuffleConfig:
    permutations: int = 20
    seed: int = 0
    batch_size: int = 64
    device: str = "cpu"


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


def partner_sets(pairs: list[Pair], class_names: list[str]) -> dict[int, set[int]]:
    """`{class index: partner class indices}`; a pair naming an unknown class is an error."""
    index = {name: i for i, name in enumerate(class_names)}
    partners: dict[int, set[int]] = {}
    for a, b in pairs:
        for name in (a, b):
            if name not in index:
                raise StepcliError(f"pair ({a!r}, {b!r}): class {name!r} is not in the class list")
        partners.setdefault(index[a], set()).add(index[b])
        partners.setdefault(index[b], set()).add(index[a])
    return partners


def stable_predictions(logits: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Argmax of `logits [n, C]`, keeping `reference [n]` where it ties the best within rounding."""
    best = logits.argmax(axis=1)
    top = logits.max(axis=1)
    ref = logits[np.arange(len(logits)), reference]
    tie = ref >= top - TIE_TOLERANCE * np.maximum(1.0, np.abs(top))
    return np.where(tie, reference, best)


def _r(value: float) -> float | None:
    return None if value is None or np.isnan(value) else round(float(value), DECIMALS)


def _order_metrics(
    preds: np.ndarray, logits: np.ndarray, original: np.ndarray, labels: np.ndarray, partners: dict, num_classes: int
) -> tuple[dict, np.ndarray]:
    """Metrics of one frame order and its per-class accuracy `[C]`."""
    confusion = confusion_matrix(labels, preds, num_classes)
    in_pair = np.asarray([int(y) in partners for y in labels], dtype=bool)
    partner_hit = np.asarray([int(p) in partners.get(int(y), ()) for y, p in zip(labels, preds, strict=True)])
    # direction: the own class beats every partner, whatever else the probe predicts
    direction = np.asarray(
        [logits[i, y] > max(logits[i, q] for q in partners[int(y)]) if m else False for i, (y, m) in
         enumerate(zip(labels, in_pair, strict=True))]
    )  # fmt: skip
    pair_n = int(in_pair.sum())
    metrics = {
        "top1": _r((preds == labels).mean()) if len(labels) else None,
        "mean_class_accuracy": _r(mean_class_accuracy(confusion)),
        "flip_rate": _r((preds != original).mean()) if len(labels) else None,
        "pair_top1": _r((preds == labels)[in_pair].mean()) if pair_n else None,
        "pair_partner_rate": _r(partner_hit[in_pair].mean()) if pair_n else None,
        "pair_direction": _r(direction[in_pair].mean()) if pair_n else None,
    }
    return metrics, per_class_accuracy(confusion)


def _mean_std(values: list[float | None]) -> dict:
    vals = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if not len(vals):
        return {"mean": None, "std": None, "min": None, "max": None}
    return {"mean": _r(vals.mean()), "std": _r(vals.std()), "min": _r(vals.min()), "max": _r(vals.max())}


def shuffle_test_logits(
    logits: np.ndarray, labels: np.ndarray, orders: dict[str, np.ndarray], class_names: list[str], pairs: list[Pair]
) -> dict:
    """The shuffle-test report from `logits [K, n, C]` (one slice per entry of `orders`, in order)."""
    partners = partner_sets(pairs, class_names)
    labels = np.asarray(labels, dtype=np.int64)
    original = logits[0].argmax(axis=1)
    per_order, per_class = [], {}
    for (name, order), order_logits in zip(orders.items(), logits, strict=True):
        preds = original if name == ORIGINAL else stable_predictions(order_logits, original)
        metrics, class_acc = _order_metrics(preds, order_logits, original, labels, partners, len(class_names))
        per_order.append({"order": name, "frames": [int(t) for t in order], **metrics})
        per_class[name] = class_acc
    shuffles = [o for o in per_order if o["order"] not in (ORIGINAL, REVERSED)]
    keys = ("top1", "mean_class_accuracy", "flip_rate", "pair_top1", "pair_partner_rate", "pair_direction")
    summary = {ORIGINAL: _pick(per_order[0], keys), REVERSED: _pick(per_order[1], keys)}
    summary[SHUFFLED] = {k: _mean_std([o[k] for o in shuffles]) for k in keys}
    shuffled_class = None
    if shuffles:  # a class without test clips is NaN in every order and stays NaN
        stacked = np.asarray([per_class[o["order"]] for o in shuffles])
        shuffled_class = stacked.mean(axis=0)
    classes = {}
    for c, name in enumerate(class_names):
        orig, rev = per_class[ORIGINAL][c], per_class[REVERSED][c]
        shuf = shuffled_class[c] if shuffled_class is not None else np.nan
        classes[name] = {
            "num_clips": int((labels == c).sum()),
            "in_pair": c in partners,
            ORIGINAL: _r(orig),
            REVERSED: _r(rev),
            SHUFFLED: _r(shuf),
            "change_reversed": _r(rev - orig),
            "change_shuffled": _r(shuf - orig),
        }
    confusion = confusion_matrix(labels, original, len(class_names))
    return {"summary": summary, "per_order": per_order, "per_class": classes, "confusion_matrix": confusion.tolist()}


def _pick(record: dict, keys: tuple[str, ...]) -> dict:
    return {k: record[k] for k in keys}


def shuffle_test(
    run: Run | Path | str,
    cache: FeatureCache | Path | str | None = None,
    cfg: ShuffleConfig | None = None,
    pairs: list[Pair] | None = None,
    pairs_source: str | None = None,
) -> dict:
    """Shuffle-test a run on its test clips; `pairs` default to the cache manifest's pairs."""
    cfg = cfg or ShuffleConfig()
    if not isinstance(run, Run):
        run = load_run(run)
    if cache is None:
        cache = run.cache_path
    if not isinstance(cache, FeatureCache):
        cache = FeatureCache(cache)
    check_cache(run.config, cache, run.run_dir)  # refuses tokens from another extraction, naming the difference
    if pairs is None:
        pairs, pairs_source = cache.manifest.pairs, "cache manifest"
    rows = run.rows(cache, "test")
    if len(rows) == 0:
        raise StepcliError(f"run {run.run_dir} has no test clips to shuffle-test")
    orders = frame_orders(cache.clip_shape[0], cfg.permutations, cfg.seed)
    logits = predict_logits(
        run.probe.to(cfg.device), cache, rows, batch_size=cfg.batch_size, device=cfg.device,
        frame_orders=list(orders.values()),
    )  # fmt: skip
    report = shuffle_test_logits(logits, cache.labels[rows], orders, cache.class_names, pairs)
    header = {
        "run": str(Path(run.run_dir).resolve()),
        "probe": run.config["probe"],
        "num_params": int(run.probe.num_params()),
        "cache": str(cache.path.resolve()),
        "num_clips": int(len(rows)),
        "num_frames": int(cache.clip_shape[0]),
        "permutations": cfg.permutations,
        "seed": cfg.seed,
        "pairs": [list(p) for p in pairs],
        "pairs_source": pairs_source or "given",
        "class_names": cache.class_names,
    }
    return {**header, **report}
