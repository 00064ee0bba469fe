"""``stepcli inspect``: what a cache holds and what made it."""

from __future__ import annotations

from pathlib import Path

import click

from stepcli.cache.reader import FeatureCache
from stepcli.commands.common import PathArg, verbosity_options
from stepcli.extract.encoders import RANDOM_INIT


def describe_cache(cache: FeatureCache) -> str:
    """What `stepcli inspect` prints: provenance, token layout, clips per split and class, failures."""
    m = cache.manifest
    ex = m.extraction
    views = ex.views
    T, L, D = cache.clip_shape
    size = sum(p.stat().st_size for p in cache.shard_paths)
    lines = [
        f"cache        {cache.path}",
        f"backbone     {ex.backbone}  weights {ex.weights}" + ("  (RANDOM INIT)" if ex.weights == RANDOM_INIT else ""),
        f"frames       T={T}, {ex.image_size} px, sampler {ex.sampler}",
        f"layers       {','.join(map(str, ex.layers))} (probes read {cache.layer} unless told --layer)",
        f"tokens       [T={T}, P+N={L} ({ex.num_prefix} prefix{' [' + ', '.join(ex.prefix) + ']' if ex.prefix else ''} + "
        f"{ex.num_patches} patches), D={D}] {ex.dtype}, "
        f"pool {ex.pool}, tokens {ex.tokens}",
        f"views        {views.clips} temporal clips x {views.crops} crops"
        + (f", + {views.train_views} train views ({views.augment}, seed {views.seed})" if views.train_views else "")
        + f"; {int(cache.num_views.sum())} views in all; schema version {m.schema_version}",
        f"dataset      {m.dataset.name}, {len(m.class_names)} classes, {len(m.pairs)} nearly-symmetric pairs",
        f"clips        {len(cache)} in {len(cache.shard_paths)} shards, {size / 2**20:.1f} MiB on disk",
    ]
    counts = cache.split_counts()
    names = m.class_names
    if counts:
        splits = sorted(counts)
        width = max(len(n) for n in names)
        lines.append("")
        lines.append(f"{'class':<{width}}  " + "  ".join(f"{s:>6}" for s in splits))
        for name in names:
            lines.append(f"{name:<{width}}  " + "  ".join(f"{counts[s][name]:>6}" for s in splits))
        lines.append(f"{'total':<{width}}  " + "  ".join(f"{sum(counts[s].values()):>6}" for s in splits))
    failures = cache.failures()
    lines.append("")
    lines.append(f"failures     {len(failures)}")
    for record in failures[:20]:
        lines.append(f"  {record['clip_id']}: {record['reason']}")
    if len(failures) > 20:
        lines.append(f"  ... {len(failures) - 20} more in failures.jsonl")
    return "\n".join(lines)


@click.command("inspect")
@click.argument("cache", type=PathArg)
@verbosity_options
def inspect_cache(cache: Path) -> None:
    """Describe a cache: backbone and weights, T, token shape, clips per split and class, failures."""
    click.echo(describe_cache(FeatureCache(cache)))
