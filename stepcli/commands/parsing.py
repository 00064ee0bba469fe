"""Parsing what several commands take as text: probe options, sweeps and seed lists."""

from __future__ import annotations

from stepcli.commands import checks
from stepcli.errors import StepcliError
from stepcli.probe.models import PROBES, probe_options
from stepcli.probe.models.specs import ablation_specs, parse_spec, parse_value, split_specs

# the STEP ablation switches of the paper, kept as flags; each is also reachable as --option KEY=VALUE
SWITCHES = {"temporal_pe": "--temporal-pe/--no-temporal-pe", "cls": "--cls", "block": "--block"}


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
        checks.check_probe_value(probe, key, options[key], valid[key])
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
    if any(not checks.SEED.min <= s <= checks.SEED.max for s in seeds):
        raise StepcliError(f"--seeds {text!r}: each seed must be in {checks.SEED.min}..{checks.SEED.max}")
    if not seeds or len(set(seeds)) != len(seeds):
        raise StepcliError(f"--seeds {text!r} must list at least one seed, each once")
    return seeds


def parse_probe_specs(text: str, ablation: str | None = None) -> tuple[str, ...]:
    """`--probes` (or `--ablation PROBE`'s rows) as spec texts, each option value checked as `--option`'s."""
    texts = ablation_specs(ablation) if ablation is not None else split_specs(text)
    for spec in map(parse_spec, texts):
        valid = probe_options(spec.name)
        for key, value in spec.options:
            checks.check_probe_value(spec.name, key, value, valid[key], f"--probes {spec.label}:")
    return tuple(texts)


def parse_layers(text: str | None) -> tuple[int, ...]:
    """`-1,-4,-7` -> (-1, -4, -7); None -> () (use --layer)."""
    if text is None:
        return ()
    try:
        layers = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise StepcliError(f"--layers {text!r} is not a comma-separated list of block numbers (e.g. -1,-4)") from None
    bad = [n for n in layers if not checks.LAYER.min <= n <= checks.LAYER.max]
    if bad:
        raise StepcliError(f"--layers {text!r}: block {bad[0]} is outside {checks.LAYER.min}..{checks.LAYER.max}")
    return layers
