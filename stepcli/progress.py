"""A progress bar on a terminal, plain periodic log lines otherwise, nothing with ``-q``."""

from __future__ import annotations

import logging
import sys
import time

from tqdm import tqdm

from stepcli.log import shows_progress

log = logging.getLogger(__name__)


class Progress:
    """Counts `unit`s towards `total`; `enabled=False` (e.g. on a non-zero rank) shows nothing."""

    def __init__(self, total: int, desc: str, unit: str = "clip", enabled: bool = True, every: float = 10.0):
        self.total, self.desc, self.unit = total, desc, unit
        self.enabled = enabled and shows_progress()
        self.bar = (
            tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)
            if self.enabled and sys.stderr.isatty()
            else None
        )
        self.count = 0
        self.start = self.last = time.monotonic()
        self.every = every
        self.postfix = ""

    def update(self, n: int = 1, **postfix: object) -> None:
        self.count += n
        if postfix:
            self.postfix = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in postfix.items())
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix_str(self.postfix, refresh=False)
        elif self.enabled and (time.monotonic() - self.last >= self.every or self.count == self.total):
            self.last = time.monotonic()
            rate = self.count / max(self.last - self.start, 1e-9)
            eta = (self.total - self.count) / rate if rate > 0 else 0.0
            log.info(
                f"{self.desc}: {self.count}/{self.total} {self.unit}s, {rate:.1f} {self.unit}s/s, "
                f"ETA {eta:.0f}s {self.postfix}".rstrip()
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
