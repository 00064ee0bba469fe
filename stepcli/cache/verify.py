"""`stepcli verify`: check every shard of a cache against its manifest, one line per problem.

What it checks is what a probe silently relies on: every shard opens and holds every per-clip
dataset with the manifest's token layout and dtype; clip ids are non-empty and unique across all
shards; labels index the class list; splits are known; every token is finite. Tokens are read a
few clips at a time, so a cache of any size is verified in bounded memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from stepcli.cache.format import SHARDS, SPLITS, Manifest
from stepcli.cache.schema import CLIP_DATASETS, token_datasets

ROWS_PER_READ = 16  # clips of tokens held in memory at once while checking finiteness
MAX_LISTED = 5  # rows named per problem before "..."


@dataclass
class VerifyReport:
    """The problems found (one line each) and what was looked at."""

    cache: Path
    problems: list[str] = field(default_factory=list)
    shards: int = 0
    clips: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        verdict = "no problems" if self.ok else f"{len(self.problems)} problem(s)"
        return f"verified {self.cache}: {self.shards} shards, {self.clips} clips, {verdict}"


def non_finite_reason(tokens: np.ndarray) -> str | None:
    """Why tokens `[..., D]` (as cached, after the float16 cast) cannot be cached, or None."""
    bad = int(np.size(tokens) - np.count_nonzero(np.isfinite(tokens)))
    if not bad:
        return None
    return (
        f"{bad} of {np.size(tokens)} token values are not finite after the cast to float16 (the backbone's "
        "activations overflow or are NaN); check the weights, or cache another --layer"
    )


def _expected(manifest: Manifest, views: int | None) -> dict[str, tuple[tuple[int, ...], str]]:
    """Per-clip dataset -> (shape after the clip axis, kind of dtype), from the manifest's layout;
    `views` is the shard's views per clip (v2), None for a v1 shard."""
    lead = () if views is None else (views,)
    T = manifest.layout.num_frames
    names = token_datasets(manifest.schema_version, manifest.extraction.layers)
    tokens = {name: ((*lead, *manifest.layout.clip_shape), manifest.extraction.dtype) for name in names}
    return {**tokens, **{spec.name: (spec.row_shape(views, T), spec.kind) for spec in CLIP_DATASETS}}


def _shard_views(f: h5py.File, manifest: Manifest) -> Iterator[str | int | None]:
    """The shard's views per clip (None for v1), or a problem if the manifest allows no such number."""
    if manifest.schema_version < 2:
        yield None
        return
    index = f.get("frame_index")
    views = index.shape[1] if isinstance(index, h5py.Dataset) and index.ndim == 3 else None
    record = manifest.extraction.views
    allowed = sorted({record.views_of("val"), record.views_of("train")})
    if views not in allowed:
        yield f"holds {views} views per clip; the manifest's views give {' or '.join(map(str, allowed))}"
    yield views


def _dtype_ok(dtype: np.dtype, kind: str) -> bool:
    if kind == "string":
        return h5py.check_string_dtype(dtype) is not None
    if kind == "integer":
        return dtype.kind in "iu"
    if kind == "float":
        return dtype.kind == "f"
    return dtype == np.dtype(kind)


def _rows(rows: list[int]) -> str:
    listed = ", ".join(map(str, rows[:MAX_LISTED]))
    return listed + (f", ... ({len(rows)} rows)" if len(rows) > MAX_LISTED else "")


def _layout_problems(f: h5py.File, manifest: Manifest) -> Iterator[str]:
    """Missing datasets, wrong shapes or dtypes, and per-clip datasets of different lengths."""
    lengths = set()
    *problems, views = _shard_views(f, manifest)
    yield from problems
    optional = {spec.name for spec in CLIP_DATASETS if spec.optional}
    for name, (shape, kind) in _expected(manifest, views).items():
        if name in optional and name not in f:
            continue  # written before stepcli recorded it: read with its fallback
        if name not in f or not isinstance(f[name], h5py.Dataset):
            yield f"has no dataset {name!r}"
            continue
        ds = f[name]
        lengths.add(ds.shape[0] if ds.shape else None)
        if tuple(ds.shape[1:]) != shape:
            yield f"{name} has shape {tuple(ds.shape)}, the manifest's layout needs [clips, {', '.join(map(str, shape))}]"
        if not _dtype_ok(ds.dtype, kind):
            yield f"{name} has dtype {ds.dtype}, expected {kind}"
    if len(lengths) > 1:
        yield f"its datasets hold different numbers of clips ({sorted(lengths, key=str)})"


def _value_problems(f: h5py.File, manifest: Manifest, ids: list[str]) -> Iterator[str]:
    """Blank ids, labels outside the class list, unknown splits, non-finite tokens."""
    blank = [r for r, clip_id in enumerate(ids) if not clip_id.strip()]
    if blank:
        yield f"{len(blank)} blank clip id(s) at rows {_rows(blank)}"
    labels = f["label"][:]
    num_classes = len(manifest.class_names)
    outside = [r for r, label in enumerate(labels) if not 0 <= int(label) < num_classes]
    if outside:
        yield f"label(s) outside the {num_classes} classes at rows {_rows(outside)} (e.g. {int(labels[outside[0]])})"
    splits = [s.decode() if isinstance(s, bytes) else s for s in f["split"][:]]
    unknown = [r for r, split in enumerate(splits) if split not in (*SPLITS, "")]
    if unknown:
        yield f"split(s) not train/val/test at rows {_rows(unknown)} (e.g. {splits[unknown[0]]!r})"
    for name in token_datasets(manifest.schema_version, manifest.extraction.layers):
        tokens = f[name]
        for start in range(0, tokens.shape[0], ROWS_PER_READ):
            block = tokens[start : start + ROWS_PER_READ]
            for offset, clip in enumerate(block):
                if (reason := non_finite_reason(clip)) is not None:
                    row = start + offset
                    where = "" if name == "tokens" else f" {name}"
                    yield f"row {row} (clip {ids[row]!r}){where}: {reason.split(' (')[0]}"


def _check_shard(path: Path, manifest: Manifest, report: VerifyReport, seen: dict[str, str]) -> None:
    def problem(text: str) -> None:
        report.problems.append(f"{path}: {text}")

    try:
        with h5py.File(path, "r") as f:
            layout = list(_layout_problems(f, manifest))
            for text in layout:
                problem(text)
            if layout:
                return
            ids = [x.decode() if isinstance(x, bytes) else x for x in f["clip_id"][:]]
            report.clips += len(ids)
            for text in _value_problems(f, manifest, ids):
                problem(text)
    except OSError as err:
        problem(f"cannot be read ({str(err).splitlines()[0]}); an interrupted copy? delete it and rerun extract")
        return
    for row, clip_id in enumerate(ids):
        where = f"{path.name} row {row}"
        if clip_id.strip() and clip_id in seen:
            problem(f"clip id {clip_id!r} at row {row} is also at {seen[clip_id]}")
        seen.setdefault(clip_id, where)


def verify_cache(cache_dir: Path | str) -> VerifyReport:
    """Check every shard of `cache_dir` (a damaged manifest is a StepcliError, as everywhere)."""
    cache_dir = Path(cache_dir)
    manifest = Manifest.load(cache_dir)
    report = VerifyReport(cache_dir)
    seen: dict[str, str] = {}
    shard_dir = cache_dir / SHARDS
    for path in sorted(shard_dir.glob("*.h5")) if shard_dir.is_dir() else []:
        report.shards += 1
        _check_shard(path, manifest, report, seen)
    return report
