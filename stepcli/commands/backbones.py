"""``stepcli backbones``: which backbones each family builds, and one spec's token layout, parameter
count and cache size, before hours of extraction: the model is built on the meta device (no
weights, no compute), so even a ViT-bigG answers in seconds."""

from __future__ import annotations

import textwrap

import click

from stepcli.cache.records import ExtractionRecord
from stepcli.commands import checks
from stepcli.commands.common import default_of, verbosity_options
from stepcli.commands.parsing import parse_layers
from stepcli.extract.budget import TOKEN_SETS, TokenBudget
from stepcli.extract.encoders import FAMILIES, RANDOM_INIT, BlockShape, FrameEncoder, load_backbone
from stepcli.extract.pipeline import SAMPLER, ExtractConfig
from stepcli.extract.size import bytes_per_view
from stepcli.units import human


def _default(name: str):
    return default_of(ExtractConfig, name)


def list_families(pattern: str | None) -> str:
    """Each family's spec form, an example, and its model names matching `pattern` (a substring or glob)."""
    glob = pattern if pattern and any(c in pattern for c in "*?[") else f"*{pattern or ''}*"
    sections = []
    for name in sorted(FAMILIES):
        family = FAMILIES[name]
        models = family.models(glob)
        head = f"{name}: {family.form}  e.g. {family.example}  ({len(models)} models match {glob!r})"
        body = textwrap.fill(
            ", ".join(models), width=110, break_on_hyphens=False, initial_indent="  ", subsequent_indent="  "
        )
        sections.append(head + ("\n" + body if models else ""))
    sections.append(
        "A model without a CLS token caches a stand-in as its one prefix token: its own pooled embedding "
        "(SigLIP: attention-pool) or the mean of its patch tokens (CNNs: global-average)."
    )
    return "\n".join(sections)


def _blocks_text(shapes: list[BlockShape]) -> list[str]:
    """Runs of blocks with the same token shape, e.g. ``0-11: P=1 + 7x7 patches, D=384``."""
    runs: list[list[BlockShape]] = []
    for shape in shapes:
        last = runs[-1][-1] if runs else None
        if last and (last.prefix, last.grid, last.dim, last.note) == (shape.prefix, shape.grid, shape.dim, shape.note):
            runs[-1].append(shape)
        else:
            runs.append([shape])
    lines = []
    for run in runs:
        first, last = run[0].index, run[-1].index
        name = f"{first}" if first == last else f"{first}-{last}"
        s = run[0]
        note = f"  ({s.note})" if s.note else ""
        lines.append(f"  {name:>7}: P={len(s.prefix)} + {s.grid[0]}x{s.grid[1]} patches, D={s.dim}{note}")
    return lines


def describe_spec(encoder: FrameEncoder, num_frames: int) -> str:
    """What `stepcli backbones --spec` prints."""
    record = ExtractionRecord(**encoder.provenance(), num_frames=num_frames, sampler=SAMPLER, dtype="float16")
    layout, depth = record.layout, encoder.depth
    params = sum(p.numel() for p in encoder.parameters())
    weights = "none: random init" if encoder.weights == RANDOM_INIT else encoder.weights
    rows, cols = encoder.grid
    return "\n".join(
        [
            f"spec         {encoder.spec}  (family {encoder.family}; weights {weights})",
            f"input        {encoder.image_size} px, mean {tuple(encoder.preprocess.mean)}, std "
            f"{tuple(encoder.preprocess.std)}",
            f"parameters   {params / 1e6:.1f}M in the image tower",
            f"layers       {','.join(map(str, encoder.layers))} of {depth} blocks (--layers -{depth}..{depth - 1})",
            f"tokens       P={layout.num_prefix} ({', '.join(encoder.prefix) or 'none'}) + N={layout.num_patches} "
            f"(grid {rows}x{cols}, pool {record.pool}, tokens {record.tokens}), D={layout.dim}; "
            f"final norm {encoder.final_norm}",
            f"cache        {human(bytes_per_view(record))} per clip at --frames {num_frames} (one view; float16)",
            "blocks",
            *_blocks_text(encoder.block_shapes(list(range(depth)))),
        ]
    )


@click.command("backbones")
@click.argument("pattern", required=False)
@click.option("--spec", help="Describe this backbone spec instead of listing models.")
@click.option("--image-size", type=checks.IMAGE_SIZE, default=_default("image_size"), show_default=True,
              help="Input size in pixels, as extract --image-size.")  # fmt: skip
@click.option("--layers", callback=lambda _c, _p, v: parse_layers(v),
              help=f"Blocks to describe, e.g. -1,-4, as extract --layers [{_default('layer')}: extract's default].")  # fmt: skip
@click.option("--pool", default=_default("pool"), show_default=True, help="As extract --pool.")
@click.option("--tokens", type=click.Choice(TOKEN_SETS), default=_default("tokens"), show_default=True,
              help="As extract --tokens.")  # fmt: skip
@click.option("--frames", "num_frames", type=checks.FRAMES, default=_default("num_frames"), show_default=True,
              help="Frames per clip (T), for the cache size per clip.")  # fmt: skip
@verbosity_options
def backbones_command(pattern, spec, image_size, layers, pool, tokens, num_frames) -> None:
    """List the backbone families and their models (PATTERN: a substring or glob), or describe one --spec."""
    if spec is None:
        click.echo(list_families(pattern))
        return
    budget = TokenBudget.parse(pool, tokens)
    encoder = load_backbone(spec, image_size, layers or (_default("layer"),), budget, meta=True)
    click.echo(describe_spec(encoder, num_frames))
