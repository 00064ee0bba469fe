"""The on-disk contract between the stages: a directory of HDF5 shards plus a manifest."""

from stepcli.cache.format import SCHEMA_VERSION, Manifest
from stepcli.cache.reader import FeatureCache
from stepcli.cache.records import DatasetRecord, ExtractionRecord, TokenLayout
from stepcli.cache.writer import ShardWriter

__all__ = [
    "SCHEMA_VERSION",
    "DatasetRecord",
    "ExtractionRecord",
    "FeatureCache",
    "Manifest",
    "ShardWriter",
    "TokenLayout",
]
