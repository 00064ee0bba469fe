"""The one registry of probes: `@register(...)` adds a class under its name with its capabilities.

Every command lists, builds, saves, loads and counts probes through `PROBES`; adding a probe is
one module with one decorated class (and its import in `models/__init__.py`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from stepcli.cache.records import TokenLayout
from stepcli.errors import StepcliError
from stepcli.probe.models.base import Capabilities, Probe

if TYPE_CHECKING:
    from stepcli.cache.reader import FeatureCache

PROBES: dict[str, type[Probe]] = {}
#: the probes `compare` and `demo` run when none are named: the paper's table, not every baseline
DEFAULT_PROBES: list[str] = []


def register(name: str, *, default: bool = True, **capabilities: Any) -> Callable[[type[Probe]], type[Probe]]:
    """Class decorator: register a `Probe` subclass as `name` with its `Capabilities`; `default=False`
    keeps it out of the comparison run when no probes are named (it is still one `--probes` away)."""

    def add(cls: type[Probe]) -> type[Probe]:
        if name in PROBES:
            raise ValueError(f"probe '{name}' is registered twice")
        cls.name, cls.capabilities = name, Capabilities(**capabilities)
        if cls.capabilities.fitted != (cls.fit is not Probe.fit):
            raise TypeError(f"probe '{name}': fitted=True and a `fit` method go together")
        PROBES[name] = cls
        if default:
            DEFAULT_PROBES.append(name)
        return cls

    return add


def probe_class(name: str) -> type[Probe]:
    """The registered class of probe `name`; an unknown name is a one-line error listing the valid ones."""
    if name not in PROBES:
        raise StepcliError(f"unknown probe '{name}'; valid probes: {', '.join(PROBES)}")
    return PROBES[name]


def probe_options(name: str) -> dict[str, Any]:
    """The options probe `name` accepts beyond the token layout, with their defaults."""
    params = inspect.signature(probe_class(name).__init__).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def build_probe(name: str, layout: TokenLayout, num_classes: int, **options: Any) -> Probe:
    """Build probe `name` for tokens `[B, T, P+N, D]` of `layout` and `num_classes` classes.

    `options` are the probe's own switches (e.g. `step`: temporal_pe, cls, block); an unknown
    name or option is a `StepcliError` listing the valid ones.
    """
    valid = probe_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise StepcliError(
            f"unknown option(s) {', '.join(unknown)} for probe '{name}'; valid options: {', '.join(valid) or 'none'}"
        )
    return PROBES[name](layout, num_classes, **options)


def build_probe_for_cache(name: str, cache: FeatureCache, **options: Any) -> Probe:
    """The one way to build a probe for the tokens and classes of a cache."""
    return build_probe(name, cache.layout, len(cache.class_names), **options)
