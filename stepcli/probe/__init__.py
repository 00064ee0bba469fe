"""Stage two: probes trained on cached frame tokens `[B, T, P+N, D]` -> logits `[B, C]`.

`PROBES` is the registry: adding a probe is one class and one line here.
"""

from __future__ import annotations

import inspect
from typing import Any

from stepcli import StepcliError
from stepcli.probe.attentive import AttentiveProbe
from stepcli.probe.base import Probe
from stepcli.probe.linear import LinearProbe
from stepcli.probe.self_attention import SelfAttentionProbe
from stepcli.probe.step import StepProbe

PROBES: dict[str, type[Probe]] = {
    probe.name: probe
    for probe in (
        LinearProbe,
        SelfAttentionProbe,
        AttentiveProbe,
        StepProbe,
    )
}


def probe_options(name: str) -> dict[str, Any]:
    """The options probe `name` accepts beyond the token layout, with their defaults."""
    if name not in PROBES:
        raise StepcliError(f"unknown probe '{name}'; valid probes: {', '.join(PROBES)}")
    params = inspect.signature(PROBES[name].__init__).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def build_probe(
    name: str,
    *,
    dim: int,
    num_classes: int,
    num_frames: int,
    num_prefix: int,
    num_patches: int,
    **options: Any,
) -> Probe:
    """Build probe `name` for tokens `[B, num_frames, num_prefix + num_patches, dim]`.

    `options` are the probe's own switches (e.g. `step`: temporal_pe, cls, block); an unknown
    name or option is a `StepcliError` listing the valid ones.
    """
    valid = probe_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise StepcliError(
            f"unknown option(s) {', '.join(unknown)} for probe '{name}'; valid options: {', '.join(valid) or 'none'}"
        )
    layout = dict(dim=dim, num_classes=num_classes, num_frames=num_frames)
    return PROBES[name](**layout, num_prefix=num_prefix, num_patches=num_patches, **options)


__all__ = ["PROBES", "Probe", "build_probe", "probe_options"]
