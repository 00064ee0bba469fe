"""The probes: `[B, T, P+N, D]` cached tokens -> logits `[B, C]`, one module per probe.

Importing this package registers every probe in `PROBES` (order: the comparison table's rows).
"""

from __future__ import annotations

# isort: off
# registration order is the order of the comparison table's rows
from stepcli.probe.models import linear  # noqa: F401
from stepcli.probe.models import self_attention  # noqa: F401
from stepcli.probe.models import attentive  # noqa: F401
from stepcli.probe.models import step  # noqa: F401
from stepcli.probe.models import efficient  # noqa: F401
from stepcli.probe.models import logreg  # noqa: F401
from stepcli.probe.models import knn  # noqa: F401

# isort: on
from stepcli.probe.models.base import Capabilities, Probe
from stepcli.probe.models.registry import (
    DEFAULT_PROBES,
    PROBES,
    build_probe,
    build_probe_for_cache,
    probe_class,
    probe_options,
    register,
)

__all__ = [
    "DEFAULT_PROBES",
    "PROBES",
    "Capabilities",
    "Probe",
    "build_probe",
    "build_probe_for_cache",
    "probe_class",
    "probe_options",
    "register",
]
