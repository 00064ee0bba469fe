"""Cache schema v1: manifest.json, shards/*.h5 and failures.jsonl (DESIGN §4).

The manifest holds the provenance that decides whether two runs produce interchangeable tokens
(``extraction``: backbone, weights, image size, layer, frames, ...), the description of the
data (``dataset``: class names, splits, nearly-symmetric pairs) and, for information only, the
library versions that made it.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from stepcli import StepcliError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SHARDS = "shards"
FAILURES = "failures.jsonl"
SPLITS = ("train", "val", "test")

# extraction keys whose change makes a cache's tokens incomparable; named in refusals
IDENTITY_KEYS = (
    "backbone",
    "weights",
    "image_size",
    "layer",
    "num_frames",
    "sampler",
    "mean",
    "std",
    "resize",
    "normalize",
    "dtype",
    "token_layout",
)


@dataclass
class Manifest:
    extraction: dict
    dataset: dict
    versions: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def class_names(self) -> list[str]:
        return list(self.dataset["class_names"])

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return [tuple(p) for p in self.dataset.get("pairs", [])]

    @property
    def token_layout(self) -> dict:
        """``{"num_prefix": P, "num_patches": N, "dim": D}``."""
        return dict(self.extraction["token_layout"])

    @property
    def num_frames(self) -> int:
        return int(self.extraction["num_frames"])

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def load(cls, cache_dir: Path) -> Manifest:
        path = Path(cache_dir) / MANIFEST
        if not path.is_file():
            raise StepcliError(f"{cache_dir} is not a stepcli cache (no {MANIFEST}); run `stepcli extract` first")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise StepcliError(f"{path} is not valid JSON ({err}); the cache is damaged") from None
        if data.get("schema_version") != SCHEMA_VERSION:
            raise StepcliError(
                f"{path} has schema version {data.get('schema_version')}, this stepcli reads {SCHEMA_VERSION}"
            )
        return cls(**data)

    def save(self, cache_dir: Path) -> None:
        write_atomic(Path(cache_dir) / MANIFEST, self.to_json() + "\n")


def describe_difference(old: dict, new: dict, keys: tuple[str, ...] = IDENTITY_KEYS) -> list[str]:
    """Human-readable ``key: old -> new`` lines for the identity keys that differ."""
    lines = []
    for key in keys:
        if old.get(key) != new.get(key):
            lines.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
    return lines


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same directory and rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
