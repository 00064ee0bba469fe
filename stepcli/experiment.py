"""The demo experiment from nothing: generate the demo videos, extract them, compare every probe.

It is `stepcli extract --dataset demo --out DIR/cache` followed by `stepcli compare --cache
DIR/cache --out DIR/compare`, so every step can be rerun by hand. Rerunning resumes: cached
clips and finished probe runs are reused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from stepcli.extract.datasets import DatasetOptions
from stepcli.extract.datasets.demo import DEFAULT_CLIPS_PER_CLASS
from stepcli.extract.pipeline import ExtractConfig, ExtractSummary, run_extract
from stepcli.outputs import check_out
from stepcli.probe.config import TrainConfig
from stepcli.probe.studies.compare import CompareConfig, Comparison, run_compare
from stepcli.probe.studies.page import CONFIG_YAML

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    """The options of `stepcli demo`."""

    out: Path = Path("stepcli-demo")
    size: int = DEFAULT_CLIPS_PER_CLASS  # clips per class
    epochs: int = TrainConfig.epochs
    # half of compare's default keeps the shuffle tests of the big probes short on a CPU
    permutations: int = 10
    backbone: str = ExtractConfig.backbone
    image_size: int = ExtractConfig.image_size
    workers: int | None = ExtractConfig.workers
    # 4x4 windows over ViT-S-32's 7x7 patch grid: 2x2 patch tokens + CLS per frame instead of 7x7 + CLS.
    # The all-token probes (self-attention above all) then see 40 tokens per clip instead of 400, which
    # brings the demo under five minutes on a 2-core CPU; its pairs differ in light, size, opacity, gaps,
    # angles and fill levels, which averages over a quarter of the frame keep (README: "Token budget").
    pool: str = "4"


#: `--quick`: a smoke test of every step in a minute or two; its numbers mean nothing
QUICK = {"size": 4, "epochs": 1, "permutations": 5}


def run_demo(cfg: DemoConfig) -> tuple[ExtractSummary, Comparison]:
    """Extract the demo into OUT/cache and compare every probe into OUT/compare."""
    cache = Path(cfg.out) / "cache"
    check_out(cfg.out, "demo")
    check_out(cache, "cache")
    check_out(Path(cfg.out) / "compare", "comparison")
    log.info(f"demo 1/2: generating and extracting the demo dataset into {cache}")
    options = DatasetOptions(root=cache / "videos", size=cfg.size)
    extract = ExtractConfig(dataset="demo", out=cache, dataset_options=options, backbone=cfg.backbone,
                            image_size=cfg.image_size, workers=cfg.workers, pool=cfg.pool)  # fmt: skip
    summary = run_extract(extract)
    log.info(f"extracted {summary.extracted} clips, {summary.skipped} already cached, {summary.failed} failed")
    if summary.failed:
        log.warning(
            f"warning: {summary.failed} clips failed to extract (see {cache / 'failures.jsonl'}); comparing the rest"
        )
    log.info(f"demo 2/2: training and shuffle-testing every probe into {Path(cfg.out) / 'compare'}")
    out = Path(cfg.out) / "compare"
    train = TrainConfig(cache=cache, probe="", out=out, epochs=cfg.epochs)
    compare = CompareConfig(cache=cache, out=out, train=train, permutations=cfg.permutations)
    # the page's reproduce command is the demo's own: the command line writes OUT/config.yaml for it
    return summary, run_compare(compare, commands=(f"stepcli demo --config {(Path(cfg.out) / CONFIG_YAML).resolve()}",))
