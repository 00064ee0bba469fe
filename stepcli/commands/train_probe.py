"""``stepcli train-probe``: stage two, one probe trained from a feature cache into a run directory."""

from __future__ import annotations

from pathlib import Path

import click

from stepcli import StepcliError
from stepcli.cache.format import Manifest
from stepcli.commands.common import PathArg, default_of, device_option, seed_option, verbosity_options
from stepcli.probe import PROBES, probe_options
from stepcli.probe.seeds import seeds_markdown, train_seeds
from stepcli.probe.step import BLOCKS, CLS_MODES
from stepcli.probe.train import TrainConfig, train_probe

# the STEP ablation switches of the paper, kept as flags; each is also reachable as --option KEY=VALUE
SWITCHES = {"temporal_pe": "--temporal-pe/--no-temporal-pe", "cls": "--cls", "block": "--block"}


def _default(name: str):
    return default_of(TrainConfig, name)


def _options_help() -> str:
    listed = "; ".join(f"{name}: {', '.join(probe_options(name)) or '(none)'}" for name in PROBES)
    return f"A probe option KEY=VALUE, repeatable. Options per probe: {listed}."


def parse_value(text: str) -> bool | int | float | str | None:
    """`true`/`false`, `none`, integers and floats become Python values; anything else stays a string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def probe_option_values(probe: str, pairs: tuple[str, ...], switches: dict) -> dict:
    """`--option KEY=VALUE` and the STEP switches as probe options, checked against the probe's own."""
    valid = probe_options(probe)
    options: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise StepcliError(f"--option {pair!r} is not KEY=VALUE; valid options for {probe}: {', '.join(valid)}")
        if key not in valid:
            raise StepcliError(
                f"--option {key}: probe '{probe}' has no option {key!r}; valid options: {', '.join(valid) or 'none'}"
            )
        options[key] = parse_value(value)
    given = {k: v for k, v in switches.items() if v is not None}
    wrong = [k for k in given if k not in valid]
    if wrong:
        accepting = sorted({n for n in PROBES for k in wrong if k in probe_options(n)})
        flags = ", ".join(SWITCHES[k] for k in wrong)
        raise StepcliError(f"{flags} only apply to --probe {', '.join(accepting)}, not to --probe {probe}")
    twice = sorted(set(given) & set(options))
    if twice:
        raise StepcliError(f"{', '.join(twice)} given both as a switch and as --option; give it once")
    return {**options, **given}


@click.command("train-probe")
@click.option("--cache", required=True, type=PathArg, help="Feature cache made by `stepcli extract`.")
@click.option("--probe", "probe", required=True, help=f"Probe: {', '.join(PROBES)}.")
@click.option("--out", required=True, type=PathArg, help="Run directory to write.")
@click.option("--epochs", type=int, default=_default("epochs"), show_default=True)
@click.option("--lr", type=float, default=_default("lr"), show_default=True, help="Peak learning rate (AdamW).")
@click.option("--weight-decay", type=float, default=_default("weight_decay"), show_default=True)
@click.option("--batch-size", type=int, default=_default("batch_size"), show_default=True, help="Clips per step.")
@click.option("--warmup-epochs", type=float, default=_default("warmup_epochs"), show_default=True)
@click.option("--clip-grad", type=float, default=_default("clip_grad"), show_default=True,
              help="Gradient-norm clipping threshold.")  # fmt: skip
@seed_option(TrainConfig, "Seed of the probe's initialisation, the split fallbacks and the batch order.")
@device_option(TrainConfig)
@click.option("--shots", type=int, help="Train on K clips per class (seeded, stratified).")
@click.option("--train-fraction", type=float, help="Train on this fraction of each class (seeded).")
@click.option("--in-memory", type=click.Choice(["auto", "yes", "no"]), default=_default("in_memory"), show_default=True,
              help="Load the cache into RAM (auto: if it takes at most half the available memory) or stream from HDF5.")  # fmt: skip
@click.option("--workers", type=int, help="HDF5 reader processes when streaming [0 on CPU, 2 on a GPU].")
@click.option("--layer", type=int, help="Which of the cache's layers (extract --layers) to train on [its first].")
@click.option("--option", "option_pairs", multiple=True, metavar="KEY=VALUE", help=_options_help())
@click.option("--temporal-pe/--no-temporal-pe", default=None, help="step: learnable frame-wise temporal encoding [on].")
@click.option("--cls", type=click.Choice(CLS_MODES), help="step: what to classify from [global].")
@click.option("--block", type=click.Choice(list(BLOCKS)), help="step: block type [simplified].")
@click.option("--sweep", "sweep_specs", multiple=True, metavar="KEY=V1,V2,...",
              help="Train one head per combination of swept values in one pass over the cache (lr, weight_decay, "
              "warmup_epochs, clip_grad or a probe option; repeatable) and keep the best on val; sweep.json holds "
              "every head's val and test numbers. Memory and time grow with the number of heads.")  # fmt: skip
@click.option("--seeds", help="Comma-separated seeds: one run per seed in OUT/seed-<s>, mean ± std in OUT/seeds.json.")
@verbosity_options
def train_probe_command(cache: Path, probe: str, out: Path, option_pairs, temporal_pe, cls, block, sweep_specs,
                        seeds, **kwargs) -> None:  # fmt: skip
    """Train a probe on cached tokens; keep the best-on-val checkpoint, report test metrics."""
    if probe not in PROBES:
        raise StepcliError(f"unknown probe '{probe}'; valid probes: {', '.join(PROBES)}")
    switches = {"temporal_pe": temporal_pe, "cls": cls, "block": block}
    options = probe_option_values(probe, option_pairs, switches)
    if options.get("cls") == "frame":
        require_frame_cls(cache)
    cfg = TrainConfig(cache=cache, probe=probe, out=out, probe_options=options, **kwargs)
    sweep = parse_sweep(sweep_specs)
    if seeds is None:
        train_probe(cfg, sweep=sweep)
        return
    summary = train_seeds(cfg, parse_seeds(seeds), sweep=sweep)
    click.echo(seeds_markdown(summary))


def require_frame_cls(cache: Path) -> None:
    """STEP's `--cls frame` reads each frame's own CLS; a backbone without one cached a stand-in
    (its pooled embedding or patch mean), which is refused rather than passed off as a CLS."""
    extraction = Manifest.load(cache).extraction
    if not extraction.frame_cls:
        stand_in = extraction.prefix[0] if extraction.prefix else "none"
        raise StepcliError(
            f"--cls frame needs each frame's own CLS token, but {extraction.backbone} has none (its prefix token "
            f"is a stand-in: {stand_in}); use --cls global or --cls mean"
        )


def parse_sweep(specs: tuple[str, ...]) -> dict[str, list]:
    """`--sweep KEY=V1,V2` (repeatable) as `{key: [values]}`; the library checks the keys."""
    sweep: dict[str, list] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise StepcliError(f"--sweep {spec!r} is not KEY=V1,V2,...")
        if key in sweep:
            raise StepcliError(f"--sweep {key} is given twice; list all its values once")
        sweep[key] = [parse_value(v) for v in values.split(",") if v.strip()]
    return sweep


def parse_seeds(text: str) -> list[int]:
    """`--seeds 0,1,2` as integers, each once."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise StepcliError(f"--seeds {text!r} must be comma-separated integers, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise StepcliError(f"--seeds {text!r} must list at least one seed, each once")
    return seeds
