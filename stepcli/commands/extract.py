"""``stepcli extract``: stage one, a dataset through a frozen backbone into a feature cache."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from stepcli.extract.datasets import DatasetOptions, dataset_names
from stepcli.extract.pipeline import ExtractConfig, run_extract

PathArg = click.Path(path_type=Path)


@click.command()
@click.option("--dataset", required=True, type=click.Choice(dataset_names()), help="Dataset adapter.")
@click.option("--out", required=True, type=PathArg, help="Cache directory (created; rerun to resume).")
@click.option("--root", type=PathArg, help="Dataset root (videos). demo: where to generate videos [OUT/videos].")
@click.option("--annotations", type=PathArg, help="Annotation file (csv: path,label[,start,end][,split]).")
@click.option("--classes", type=PathArg, help="Class list, one name per line.")
@click.option(
    "--split-file",
    type=PathArg,
    help="Dataset split file, where the dataset has several (drive-act: a split CSV or the split number 0, 1, 2).",
)
@click.option(
    "--view", help="Camera view, for multi-view datasets (ikea-asm: dev1-dev3 [dev3]; drive-act [kinect_color])."
)
@click.option("--limit", type=int, help="Only the first N clips (for a quick look).")
@click.option(
    "--pairs",
    "pairs_file",
    type=PathArg,
    help="Nearly-symmetric pairs ('class a,class b' per line or JSON); replaces the built-in list.",
)
@click.option("--size", type=int, help="demo: clips per class [20].")
@click.option("--seed", type=int, default=0, show_default=True, help="demo: generator seed.")
@click.option(
    "--backbone",
    default="openclip:ViT-S-32",
    show_default=True,
    help="openclip:<model>[:<tag or file>] or timm:<model>[:<file>|pretrained]; no weights = random init.",
)
@click.option("--frames", "num_frames", type=int, default=8, show_default=True, help="Frames sampled per clip (T).")
@click.option("--image-size", type=int, default=224, show_default=True, help="Input size for every backbone.")
@click.option("--layer", type=int, default=-1, show_default=True, help="Transformer block whose tokens are cached.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True, help="Clips per forward pass.")
@click.option("--workers", type=int, default=2, show_default=True, help="Decoding processes (0: decode inline).")
@click.option("--clips-per-shard", type=int, default=64, show_default=True)
@click.option("--rank", type=int, help="This process's rank (default: torchrun / Slurm environment).")
@click.option("--world-size", type=int, help="Number of processes (default: torchrun / Slurm environment).")
@click.option("--quiet", is_flag=True, help="No progress output.")
def extract(
    dataset, out, root, annotations, classes, split_file, view, limit, pairs_file, size, seed, **kwargs
) -> None:
    """Decode clips, run the frozen backbone once, cache every frame's tokens in HDF5 shards."""
    if dataset == "demo" and root is None:
        root = out / "videos"
    options = DatasetOptions(
        root=root, annotations=annotations, classes=classes, split_file=split_file,
        view=view, limit=limit, size=size, seed=seed, pairs=pairs_file,
    )  # fmt: skip
    summary = run_extract(ExtractConfig(dataset=dataset, out=out, dataset_options=options, **kwargs))
    if not kwargs["quiet"]:
        rank = f"rank {summary.rank}/{summary.world_size}: " if summary.world_size > 1 else ""
        click.echo(
            f"{rank}extracted {summary.extracted} clips, {summary.skipped} already cached, {summary.failed} failed"
            + (f" (reasons in {out / 'failures.jsonl'})" if summary.failed else "")
            + f"; the cache holds {summary.cached} of {summary.total} clips; inspect with: stepcli inspect {out}",
            err=True,
        )
        missing = summary.total - summary.cached - summary.failed
        if summary.world_size > 1 and missing > 0:
            click.echo(
                f"note: this process did its share (1/{summary.world_size}); up to {missing} clips are the other "
                "ranks'. If they did not run (e.g. sbatch without srun), rerun with any number of processes to finish.",
                err=True,
            )
    sys.exit(1 if summary.failed else 0)
