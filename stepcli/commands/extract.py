"""``stepcli extract``: stage one, a dataset through a frozen backbone into a feature cache."""

from __future__ import annotations

import logging
import sys

import click

from stepcli.cache.storage import ignore_file_size_signal
from stepcli.commands import checks
from stepcli.commands.common import PathArg, default_of, device_option, pairs_option, verbosity_options
from stepcli.commands.parsing import parse_layers
from stepcli.extract.budget import TOKEN_SETS, TokenBudget
from stepcli.extract.datasets import DatasetOptions, dataset_names
from stepcli.extract.datasets.demo import DEFAULT_CLIPS_PER_CLASS
from stepcli.extract.datasets.drive_act import VIEWS as DRIVE_ACT_VIEWS
from stepcli.extract.datasets.ikea_asm import VIEWS as IKEA_VIEWS
from stepcli.extract.pipeline import ExtractConfig, run_extract
from stepcli.extract.views import views_record

log = logging.getLogger(__name__)
DATASET_FIELDS = (
    "root", "annotations", "classes", "exclude_classes", "split_file", "view", "limit", "pairs_file", "size", "seed",
)  # fmt: skip


def _default(name: str):
    return default_of(ExtractConfig, name)


def check_extract(options: dict) -> None:
    """What click cannot check alone, before any work: rank below world size, an image no smaller
    than a patch, a parseable --pool and view options."""
    checks.check_rank(options["rank"], options["world_size"])
    checks.check_backbone(options["backbone"], options["image_size"], options["layers"] or (options["layer"],))
    TokenBudget.parse(options["pool"], options["tokens"])
    views_record(
        options["clips"], options["crops"], options["train_views"], options["augment"], options["augment_seed"]
    )


@click.command()
@click.option("--dataset", required=True, type=click.Choice(dataset_names()), help="Dataset adapter.")
@click.option("--out", required=True, type=PathArg, help="Cache directory (created; rerun to resume).")
@click.option("--root", type=PathArg,
              help="Dataset root as downloaded (official or mmaction2 layout). demo: where to generate videos [OUT/videos].")  # fmt: skip
@click.option("--annotations", type=PathArg,
              help="Annotation folder or file, when not where --root's layout has it (csv: path,label[,start,end][,split]).")  # fmt: skip
@click.option("--classes", type=PathArg, help="Class list, one name per line: keep only these classes.")
@click.option("--exclude-classes", multiple=True, default=default_of(DatasetOptions, "exclude_classes"),
              help="Drop this class and its clips (repeat for several), e.g. ikea-asm: --exclude-classes NA.")  # fmt: skip
@click.option("--split-file", type=PathArg,
              help="Dataset split file, where the dataset has several (drive-act: a split CSV or the split number 0, 1, 2).")  # fmt: skip
@click.option("--view", help=f"Camera view, for multi-view datasets (ikea-asm: {'|'.join(IKEA_VIEWS)} [dev3]; "
              f"drive-act: {'|'.join(DRIVE_ACT_VIEWS)} [kinect_color]).")  # fmt: skip
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N clips (for a quick look).")
@pairs_option("Nearly-symmetric pairs ('class a,class b' per line or JSON); replaces the built-in list.")
@click.option("--size", type=checks.CLIPS_PER_CLASS, help=f"demo: clips per class [{DEFAULT_CLIPS_PER_CLASS}].")
@click.option("--seed", type=checks.SEED, default=default_of(DatasetOptions, "seed"), show_default=True,
              help="demo: generator seed.")  # fmt: skip
@click.option("--backbone", default=_default("backbone"), show_default=True,
              help="openclip:<model>[:<tag or file>] or timm:<model>[:<file>|pretrained]; no weights = random init.")  # fmt: skip
@click.option("--frames", "num_frames", type=checks.FRAMES, default=_default("num_frames"), show_default=True,
              help="Frames sampled per clip (T).")  # fmt: skip
@click.option("--image-size", type=checks.IMAGE_SIZE, default=_default("image_size"), show_default=True,
              help="Input size for every backbone.")  # fmt: skip
@click.option("--layer", type=checks.LAYER, default=_default("layer"), show_default=True,
              help="Transformer block whose tokens are cached.")  # fmt: skip
@click.option("--layers", callback=lambda _c, _p, v: parse_layers(v),
              help="Several blocks in one pass, e.g. -1,-4,-7 (the first is the default for probes); replaces --layer.")  # fmt: skip
@click.option("--clips", type=click.IntRange(1, 64), default=_default("clips"), show_default=True,
              help="Temporal clips per clip (evenly offset frame sets), for the multi-view test.")  # fmt: skip
@click.option("--crops", type=click.IntRange(1, 3), default=_default("crops"), show_default=True,
              help="Spatial crops per clip: 1 (centre) or 3 (left, centre, right along the long side).")  # fmt: skip
@click.option("--train-views", type=click.IntRange(0, 256), default=_default("train_views"), show_default=True,
              help="Augmented views per train clip (needs --augment).")  # fmt: skip
@click.option("--augment", default=_default("augment"),
              help="Augmentation of the train views: rrc[:min_scale] (seeded random resized crop; no flip).")  # fmt: skip
@click.option("--augment-seed", type=checks.SEED, default=_default("augment_seed"), show_default=True,
              help="Seed of the train views' augmentation (--augment): the same seed, the same crops.")  # fmt: skip
@click.option("--pool", default=_default("pool"), show_default=True,
              help="Average the patch grid over KxK (or RxC) windows before caching; prefix tokens kept.")  # fmt: skip
@click.option("--tokens", type=click.Choice(TOKEN_SETS), default=_default("tokens"), show_default=True,
              help="all, or prefix: only CLS and registers (probes that need patches refuse such a cache).")  # fmt: skip
@click.option("--force", is_flag=True, help="Extract even when the projected cache size exceeds the free disk.")
@device_option(ExtractConfig)
@click.option("--batch-size", type=click.IntRange(1, 4096), default=_default("batch_size"), show_default=True,
              help="Clips decoded and written together (a CPU backbone call takes as many frames as its activations allow).")  # fmt: skip
@click.option("--workers", type=checks.WORKERS, default=_default("workers"),
              help="Decoding processes (0: decode inline) [default: one per four cores on a CPU, every core but one "
                   "beside a GPU, at most 8].")  # fmt: skip
@click.option("--threads", type=click.IntRange(1, 1024), default=_default("threads"),
              help="Torch threads for the backbone [default: torch's own, at most the cores this process may use].")  # fmt: skip
@click.option(
    "--clips-per-shard",
    type=click.IntRange(1, 1_000_000),
    default=_default("clips_per_shard"),
    show_default=True,
    help="Clips per HDF5 shard file; an interrupted extraction keeps every complete shard and resumes after it.",
)
@click.option("--rank", type=click.IntRange(min=0), help="This process's rank (default: torchrun / Slurm environment).")
@click.option(
    "--world-size", type=click.IntRange(1, 65536), help="Number of processes (default: torchrun / Slurm environment)."
)
@click.option("--stall-warning", type=checks.STALL, default=_default("stall_warning"), show_default=True,
              help="Seconds without a decoded clip before a warning says what each decoding worker does (0: never).")  # fmt: skip
@verbosity_options
def extract(dataset, out, **kwargs) -> None:
    """Decode clips, run the frozen backbone once, cache every frame's tokens in HDF5 shards."""
    given = {k: kwargs.pop(k) for k in DATASET_FIELDS}
    given["pairs"] = given.pop("pairs_file")
    if dataset == "demo" and given["root"] is None:
        given["root"] = out / "videos"
    check_extract(kwargs)
    ignore_file_size_signal()  # past `ulimit -f`, a one-line error instead of a silent kill
    summary = run_extract(ExtractConfig(dataset=dataset, out=out, dataset_options=DatasetOptions(**given), **kwargs))
    for line in summary.report(out):
        log.info(line)
    sys.exit(1 if summary.missing else 0)  # any clip of the requested set not in the cache
