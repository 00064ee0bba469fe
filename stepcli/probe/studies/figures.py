"""What every study plot shares: one figure style, and missing values drawn as gaps."""

from __future__ import annotations

import numpy as np


def new_figure(width: float, height: float):
    """A matplotlib figure off the pyplot state machine (no display, safe in worker processes)."""
    from matplotlib.figure import Figure  # deferred: matplotlib costs a second to import, only plots need it

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def plotted(x: float | None) -> float:
    """A metric as a plotted value: None (not measured) becomes NaN, which matplotlib leaves out."""
    return np.nan if x is None else float(x)
