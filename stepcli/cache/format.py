"""Cache schema v2 (v1 still read): manifest.json, shards/*.h5 and failures.jsonl.

The manifest holds the provenance that decides whether two runs produce interchangeable tokens
(``extraction``: backbone, weights, image size, layer, frames, ...), the description of the
data (``dataset``: class names, splits, nearly-symmetric pairs) and, for information only, the
library versions that made it. What a shard holds is `cache/schema.py`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from stepcli.cache.records import DatasetRecord, ExtractionRecord, TokenLayout
from stepcli.errors import StepcliError
from stepcli.files import write_atomic
from stepcli.pairs import Pair

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
# what each axis of a cache is, written into every v2 manifest for whoever opens it without stepcli
AXES = {
    "tokens": "shards/*.h5 tokens/<layer>: [clip, view, frame, token, dim] float16; tokens are P prefix then N patches",
    "views": "view v < clips*crops: temporal clip v // crops, spatial crop v % crops (centre; or left, centre, "
    "right along the long side); train clips then hold train_views augmented views, view clips*crops+j of "
    "temporal clip j % clips",
    "layers": "one tokens/<layer> dataset per cached block (negative: counted from the last); 'layer' is the default",
    "pool": "patch grid averaged over pool windows before caching (1x1: none); prefix tokens kept as they are",
}
MANIFEST = "manifest.json"
SHARDS = "shards"
FAILURES = "failures.jsonl"
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Manifest:
    """manifest.json: the extraction that made the tokens, the dataset, and (for information) versions."""

    extraction: ExtractionRecord
    dataset: DatasetRecord
    versions: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def class_names(self) -> list[str]:
        return list(self.dataset.class_names)

    @property
    def pairs(self) -> list[Pair]:
        return list(self.dataset.pairs)

    @property
    def layout(self) -> TokenLayout:
        return self.extraction.layout

    def to_dict(self) -> dict:
        data = {
            "extraction": self.extraction.to_dict(),
            "dataset": self.dataset.to_dict(),
            "versions": dict(self.versions),
            "schema_version": self.schema_version,
        }
        return data if self.schema_version < 2 else {**data, "axes": AXES}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> Manifest:
        return cls(
            extraction=ExtractionRecord.from_dict(data.get("extraction")),
            dataset=DatasetRecord.from_dict(data.get("dataset")),
            versions=dict(data.get("versions", {})),
            schema_version=data.get("schema_version", SCHEMA_VERSION),
        )

    @classmethod
    def load(cls, cache_dir: Path) -> Manifest:
        path = Path(cache_dir) / MANIFEST
        if not path.is_file():
            raise StepcliError(f"{cache_dir} is not a stepcli cache (no {MANIFEST}); run `stepcli extract` first")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise StepcliError(f"{path} is not valid JSON ({err}); the cache is damaged") from None
        if not isinstance(data, dict) or data.get("schema_version") not in READABLE_VERSIONS:
            version = data.get("schema_version") if isinstance(data, dict) else None
            readable = " and ".join(map(str, READABLE_VERSIONS))
            raise StepcliError(f"{path} has schema version {version}, this stepcli reads versions {readable}")
        try:
            return cls.from_dict(data)
        except StepcliError as err:
            raise StepcliError(f"{path}: {err}; the cache is damaged") from None

    def save(self, cache_dir: Path) -> None:
        write_atomic(Path(cache_dir) / MANIFEST, self.to_json() + "\n")

    def differences(self, other: Manifest) -> list[str]:
        """Why tokens of `other` cannot stand in for ours: differing extraction keys, class names."""
        diff = self.extraction.differences(other.extraction)
        if self.class_names != other.class_names:
            diff.append("class_names differ")
        mine, theirs = self.dataset.source, other.dataset.source
        if mine.get("generator") and mine.get("generator") == theirs.get("generator"):
            # a generated dataset's options (the demo's size and seed) decide what its clips hold
            keys = sorted(k for k in {*mine, *theirs} - {"generator"} if mine.get(k) != theirs.get(k))
            diff += [f"{k} {mine.get(k)} -> {theirs.get(k)}" for k in keys]
        return diff
