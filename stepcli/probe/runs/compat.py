"""The one check that a run and a cache belong together, used by every command that pairs them.

A probe is only meaningful on tokens like those it was trained on: the same extraction (backbone,
weights, image size, frames, views, pooling, token layout), read at the same layer, with classes
it knows. Every difference is named, so the user sees what to re-extract.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stepcli.cache.records import ExtractionRecord
from stepcli.errors import StepcliError

if TYPE_CHECKING:
    from stepcli.cache.reader import FeatureCache
    from stepcli.probe.config import RunConfig
    from stepcli.probe.models.base import Probe

# which other layers a cache holds does not change the tokens of the layer read, which is checked itself
_IGNORED_KEYS = ("layers",)
CLASSES_SAME, CLASSES_BY_NAME = "same", "by-name"
#: how the differences about classes begin (the rest are about tokens)
CLASS_DIFFERENCES = ("class_names", "class(es)")


def extraction_differences(run: ExtractionRecord, cache: ExtractionRecord) -> list[str]:
    """`key: run's -> cache's` for every extraction setting that changes tokens (not the list of layers held)."""
    return [d for d in run.differences(cache) if d.split(":", 1)[0] not in _IGNORED_KEYS]


def run_cache_differences(config: RunConfig, layer: int, cache: FeatureCache, classes: str = CLASSES_SAME) -> list[str]:
    """Why run `config` (trained on `layer`) cannot be scored on `cache` as opened; [] when it can.

    `classes`: CLASSES_SAME wants the run's class list in its order (the run's own cache, a copy);
    CLASSES_BY_NAME accepts any cache whose classes the run knows (cross-view evaluation).
    """
    diff = extraction_differences(config.cache.extraction, cache.manifest.extraction)
    if cache.layer != layer:
        diff.append(f"layer read: {layer} -> {cache.layer}")
    if config.layout != cache.layout:
        diff.append(f"token layout [T, P+N, D]: {list(config.layout.clip_shape)} -> {list(cache.layout.clip_shape)}")
    if classes == CLASSES_SAME and list(config.class_names) != list(cache.class_names):
        diff.append(f"{CLASS_DIFFERENCES[0]} differ")
    if classes == CLASSES_BY_NAME:
        unknown = [name for name in cache.class_names if name not in set(config.class_names)]
        if unknown:
            diff.append(f"{len(unknown)} {CLASS_DIFFERENCES[1]} the run was not trained on (e.g. {unknown[0]!r})")
    return diff


def check_frame_cls(probe: type[Probe], options: dict, extraction: ExtractionRecord) -> None:
    """Refuse a probe that, with `options`, classifies from each frame's own CLS token, on a cache
    whose prefix token is a stand-in (a backbone without CLS: its pooled embedding or patch mean)."""
    if probe.reads_frame_cls(options) and not extraction.frame_cls:
        stand_in = extraction.prefix[0] if extraction.prefix else "none"
        raise StepcliError(
            f"probe '{probe.name}' with {', '.join(f'{k}={v}' for k, v in options.items())} reads each frame's own "
            f"CLS token, but {extraction.backbone} has "
            f"none (its prefix token is a stand-in: {stand_in}); use another option (STEP: --cls global or mean)"
        )


def check_run_cache(
    run_dir: object, config: RunConfig, layer: int, cache: FeatureCache, classes: str = CLASSES_SAME
) -> None:
    """A one-line error naming every difference between run `run_dir` and `cache`."""
    diff = run_cache_differences(config, layer, cache, classes)
    tokens = [d for d in diff if not any(marker in d for marker in CLASS_DIFFERENCES)]
    if diff and not tokens:  # the same tokens, other labels: not "another extraction"
        raise StepcliError(
            f"run {run_dir} and cache {cache.path} have the same extraction but other classes ({'; '.join(diff)}); "
            "score the run on a cache of its classes (a cache's classes are its dataset's, or extract --classes)"
        )
    if diff:
        raise StepcliError(
            f"run {run_dir} was trained on tokens from another extraction than cache {cache.path} "
            f"(run -> cache: {'; '.join(diff)}); use a cache extracted with the run's settings"
        )
