"""Stage two: probes trained on cached frame tokens `[B, T, P+N, D]` -> logits `[B, C]`.

`PROBES` is the one registry: every command lists, builds, saves, loads and counts probes
through it. Adding a probe is one module and one line here.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from stepcli import StepcliError
from stepcli.cache.records import TokenLayout
from stepcli.probe.attentive import AttentiveProbe
from stepcli.probe.base import Probe
from stepcli.probe.knn import KnnProbe
from stepcli.probe.linear import LinearProbe
from stepcli.probe.logreg import LogRegProbe
from stepcli.probe.self_attention import SelfAttentionProbe
from stepcli.probe.step import StepProbe

if TYPE_CHECKING:
    from stepcli.cache.reader import FeatureCache

PROBES: dict[str, type[Probe]] = {
    probe.name: probe
    for probe in (
        LinearProbe,
        SelfAttentionProbe,
        AttentiveProbe,
        StepProbe,
        LogRegProbe,
        KnnProbe,
    )
}


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


__all__ = ["PROBES", "Probe", "build_probe", "build_probe_for_cache", "probe_class", "probe_options"]
