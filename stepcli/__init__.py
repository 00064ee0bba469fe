"""stepcli: order-aware image-to-video probing from a cache of frozen frame tokens.

`import stepcli` is cheap; the API (`stepcli.extract`, `train_probe`, `compare`, `shuffle_test`,
`evaluate`, `predict`, `FeatureCache`, `load_run`, the `PROBES`, `FAMILIES` and `DATASETS`
registries and the result types) loads on first use, from `stepcli.api`. See docs/api.md.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

from stepcli.errors import StepcliError
from stepcli.version import __version__

API = (
    "DATASETS", "FAMILIES", "PROBES", "Comparison", "ExtractSummary", "FeatureCache", "Prediction", "Run",
    "ShuffleResult", "compare", "evaluate", "extract", "load_run", "predict", "shuffle_test", "train_probe",
)  # fmt: skip
__all__ = ["StepcliError", "__version__", *API]


def _api(name: str) -> Any:
    # deferred: the API pulls in torch and the whole library; `import stepcli` (and the CLI's errors) stays light
    from stepcli import api

    return getattr(api, name)


def __getattr__(name: str) -> Any:
    if name in API:
        return _api(name)
    raise AttributeError(f"module 'stepcli' has no attribute {name!r}")


class _Face(ModuleType):
    """`stepcli.extract` is the API's function, though `stepcli/extract/` is also a subpackage: the
    import system's `setattr(stepcli, "extract", package)` lands beside it, and `from stepcli.extract
    import ...` (which reads sys.modules) is unchanged."""

    @property
    def extract(self) -> Any:
        return _api("extract")

    @extract.setter
    def extract(self, package: ModuleType) -> None:
        self.__dict__["extract_package"] = package


sys.modules[__name__].__class__ = _Face
