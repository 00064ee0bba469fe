"""`stepcli evaluate`: score a trained run on another cache made with the same extraction.

The cross-view protocol (train on IKEA-ASM's dev3 camera, test on dev1) and any held-out set
extracted later: the tokens must come from the same backbone, weights, frames and layout, or the
probe would read numbers it never saw, so differing extraction settings are refused by key.
Classes are matched by name, so the other cache may list them in another order; a class the run
does not know cannot be scored and is refused. With `--split test`, a cache that holds all of
the run's recorded test clips (its own cache, or a copy) is scored on them, which reproduces its
metrics.json exactly; any other cache on its own test split. Clips of any other set that the run
trained or validated on (by clip id, or by clip group, i.e. source video, when ids differ: the same
generator or videos extracted again) are left out with one line saying how many, and
evaluation.json records the count; a score on clips the probe saw would not be a test.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from stepcli.cache.reader import FeatureCache
from stepcli.device import resolve_device
from stepcli.errors import StepcliError
from stepcli.files import write_atomic
from stepcli.outputs import check_out
from stepcli.probe.evaluation.inference import evaluate
from stepcli.probe.runs.compat import CLASSES_BY_NAME
from stepcli.probe.runs.rundir import METRICS, Run, load_run
from stepcli.probe.studies.shuffle import SHUFFLE_DIR, ShuffleConfig, shuffle_rows, write_shuffle_outputs

log = logging.getLogger(__name__)

EVALUATION = "evaluation.json"
EVAL_SPLITS = ("test", "all")
RECORDED_TEST = "the run's recorded test split"


@dataclass(frozen=True)
class EvaluateConfig:
    """The options of `stepcli evaluate`."""

    split: str = "test"
    batch_size: int = 64
    device: str = "auto"
    shuffle: bool = False
    permutations: int = ShuffleConfig.permutations
    seed: int = 0


@dataclass(frozen=True)
class EvaluationRecord:
    """evaluation.json: which run was scored on which clips of which cache."""

    run: str
    cache: str
    split: str
    clips: str  # where the clips came from: the run's recorded test split, the cache's, or all
    num_clips: int
    #: clips of that set left out because the run trained or validated on them: `{"by_clip_id": n, "by_group": n}`
    excluded_seen: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EvaluationRecord:
        return cls(**data)


def seen_by_run(run: Run, cache: FeatureCache, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks over `rows`: clips the run trained or validated on by clip id, and (otherwise) by group."""
    seen_ids = {i for split in ("train", "val") for i in run.split_ids.get(split, [])}
    seen_groups = {g for split in ("train", "val") for g in run.split_groups.get(split, [])}
    by_id = np.asarray([cache.clip_ids[r] in seen_ids for r in rows], dtype=bool)
    by_group = np.asarray([str(cache.groups[r]) in seen_groups for r in rows], dtype=bool) & ~by_id
    return by_id, by_group


def class_map(run: Run, cache: FeatureCache) -> np.ndarray:
    """`[C_cache]`: the run's class index of each of the cache's classes, matched by name (the cache's
    classes were checked to be known to the run)."""
    index = {name: i for i, name in enumerate(run.class_names)}
    return np.asarray([index[name] for name in cache.class_names], dtype=np.int64)


def evaluation_rows(run: Run, cache: FeatureCache, split: str) -> tuple[np.ndarray, str]:
    """The clips to score and where they came from."""
    if split not in EVAL_SPLITS:
        raise StepcliError(f"--split must be one of {', '.join(EVAL_SPLITS)}, got {split!r}")
    if split == "all":
        seen = set(run.split_ids.get("train", [])) | set(run.split_ids.get("val", []))
        reused = sum(clip_id in seen for clip_id in cache.clip_ids)
        if reused:
            log.warning(f"warning: --split all scores {reused} of the {len(cache)} clips the run trained or selected "
                        "on (its train and val splits); their numbers are not a test score")  # fmt: skip
        return np.arange(len(cache), dtype=np.int64), "all clips of the cache"
    ids = set(cache.clip_ids)
    if run.split_ids.get("test") and all(clip_id in ids for clip_id in run.split_ids["test"]):
        return run.rows(cache, "test"), RECORDED_TEST  # its own cache, or a copy of it
    rows = cache.rows("test")
    if len(rows) == 0:
        raise StepcliError(f"cache {cache.path} has no 'test' clips; pass --split all to score every clip")
    return rows, "the cache's test split"


def _prepare_out(out: Path) -> Path:
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / EVALUATION).exists())):
        raise StepcliError(f"--out {out} exists and is not an evaluation directory; choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    return out


def evaluate_run(run_dir: Path, cache_dir: Path, out: Path, cfg: EvaluateConfig | None = None) -> dict[str, Path]:
    """Score run `run_dir` on `cache_dir`; write metrics.json, evaluation.json (and a shuffle test) to `out`."""
    cfg = cfg or EvaluateConfig()
    run = load_run(run_dir)
    cache = run.open_cache(Path(cache_dir))  # the layer the probe was trained on, not the cache's first
    run.check_cache(cache, classes=CLASSES_BY_NAME)
    mapping = class_map(run, cache)
    rows, source = evaluation_rows(run, cache, cfg.split)
    excluded = {}
    if source != RECORDED_TEST:
        by_id, by_group = seen_by_run(run, cache, rows)
        if by_id.any() or by_group.any():
            excluded = {"by_clip_id": int(by_id.sum()), "by_group": int(by_group.sum())}
            if (by_id | by_group).all():
                raise StepcliError(
                    f"every one of the {len(rows)} clips to score ({source}) is one run {run_dir} trained or validated "
                    "on; score it on clips it never saw"
                )
            log.warning(
                f"evaluate: left out {int((by_id | by_group).sum())} of {len(rows)} clips ({source}) that the run trained "
                f"or validated on ({excluded['by_clip_id']} by clip id, {excluded['by_group']} by clip group)"
            )
            rows = rows[~(by_id | by_group)]
    out = _prepare_out(check_out(out, "evaluation"))
    device = resolve_device(cfg.device)
    labels = mapping[cache.labels[rows]]
    metrics = evaluate(run.probe.to(device), cache, rows, batch_size=cfg.batch_size, device=device, intervals=True,
                       labels=labels, class_names=run.class_names)  # fmt: skip
    record = EvaluationRecord(str(Path(run_dir).resolve()), str(cache.path.resolve()), cfg.split, source, len(rows),
                              excluded)  # fmt: skip
    paths = {"metrics": out / METRICS, "evaluation": out / EVALUATION}
    write_atomic(paths["metrics"], json.dumps({"probe": run.config.probe, **metrics}, indent=2, sort_keys=True) + "\n")
    write_atomic(paths["evaluation"], json.dumps(record.to_dict(), indent=2) + "\n")
    if cfg.shuffle:
        shuffle_cfg = ShuffleConfig(permutations=cfg.permutations, seed=cfg.seed, batch_size=cfg.batch_size,
                                    device=cfg.device)  # fmt: skip
        known = [p for p in cache.manifest.pairs if p[0] in run.class_names and p[1] in run.class_names]
        result = shuffle_rows(run, cache, rows, labels, shuffle_cfg, known, "cache manifest")
        paths |= write_shuffle_outputs(result, out / SHUFFLE_DIR)
    return paths
