"""Probe specs: a probe and some of its options as one row of a comparison, e.g. `step[cls=frame]`.

An ablation or a control is a probe with an option changed; as a spec it gets its own row, run
directory and shuffle test, trained like every other row. A spec without options is the probe's
plain name, so its row and run directory are what they always were.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from stepcli.errors import StepcliError
from stepcli.probe.models.registry import probe_class, probe_options

_SPEC = re.compile(r"^\s*([^\[\]]+?)\s*(?:\[(.*)\])?\s*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


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


def format_value(value: Any) -> str:
    """An option value as the spec spells it: lower-case true/false/none, numbers as Python writes them."""
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    return str(value)


@dataclass(frozen=True)
class ProbeSpec:
    """A registered probe and the options it is built with for one comparison row."""

    name: str
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        """`name[key=value,...]`, the options in the order given; the plain name without options."""
        if not self.options:
            return self.name
        return f"{self.name}[{','.join(f'{k}={format_value(v)}' for k, v in self.options)}]"

    @property
    def dirname(self) -> str:
        """A directory name of letters, digits, `._-` only: `step.cls-frame` for `step[cls=frame]`."""
        parts = [self.name, *(f"{k}-{format_value(v)}" for k, v in self.options)]
        return ".".join(_UNSAFE.sub("_", p) for p in parts)

    @property
    def option_dict(self) -> dict[str, Any]:
        return dict(self.options)

    def check(self) -> None:
        """An unknown probe or option is a one-line error naming the valid ones."""
        probe_class(self.name)
        valid = probe_options(self.name)
        unknown = [k for k, _ in self.options if k not in valid]
        if unknown:
            raise StepcliError(
                f"probe spec {self.label!r}: probe '{self.name}' has no option {', '.join(unknown)}; "
                f"valid options: {', '.join(valid) or 'none'}"
            )


def split_specs(text: str) -> list[str]:
    """`--probes` text split at the commas outside brackets: `a,b[x=1,y=2]` -> `a`, `b[x=1,y=2]`."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += (char == "[") - (char == "]")
        if depth < 0 or depth > 1:
            raise StepcliError(f"--probes {text!r}: unbalanced brackets")
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if depth:
        raise StepcliError(f"--probes {text!r}: unbalanced brackets")
    return [p.strip() for p in [*parts, current] if p.strip()]


def parse_spec(text: str) -> ProbeSpec:
    """`name` or `name[key=value,...]` (values: true/false, none, numbers, or names)."""
    match = _SPEC.match(text)
    if not match:
        raise StepcliError(f"probe spec {text!r} is not NAME or NAME[KEY=VALUE,...]")
    name, body = match.group(1), match.group(2)
    options: list[tuple[str, Any]] = []
    for item in (body or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise StepcliError(f"probe spec {text!r}: {item.strip()!r} is not KEY=VALUE")
        if key in dict(options):
            raise StepcliError(f"probe spec {text!r} gives {key} twice")
        options.append((key, parse_value(value.strip())))
    spec = ProbeSpec(name, tuple(options))
    spec.check()
    return spec


def ablation_specs(name: str) -> tuple[str, ...]:
    """The paper's ablation of probe `name` as spec texts: the probe, each of its switches off in turn,
    and the probe it improves on (what the probe class declares in `ablations`)."""
    cls = probe_class(name)
    if not cls.ablations:
        raise StepcliError(f"--ablation {name}: probe '{name}' declares no ablation")
    return tuple(ProbeSpec(n, tuple(opts.items())).label for n, opts in cls.ablations)
