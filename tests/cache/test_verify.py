"""`stepcli verify` passes a good cache and names each problem of a damaged one; `FeatureCache`
(and so `train-probe`) refuses a cache with blank or duplicate clip ids."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import fails, invoke

from stepcli.cache.reader import FeatureCache
from stepcli.errors import StepcliError


def _copy(demo_cache: Path, tmp_path: Path) -> Path:
    out = tmp_path / "cache"
    shutil.copytree(demo_cache, out)
    return out


def _shards(cache: Path) -> list[Path]:
    return sorted((cache / "shards").glob("*.h5"))


def _blank_ids(shard: Path) -> str:
    with h5py.File(shard, "r+") as f:
        f["clip_id"][:] = [""] * len(f["clip_id"])
    return "blank clip id"


def _duplicate(shard: Path) -> str:
    first = _shards(shard.parent.parent)[0]
    with h5py.File(first, "r") as f:
        twin = f["clip_id"][0].decode()
    with h5py.File(shard, "r+") as f:
        f["clip_id"][1] = twin
    return f"clip id {twin!r} at row 1 is also at {first.name} row 0"


def _truncate(shard: Path) -> str:
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])  # an interrupted copy
    return "cannot be read"


TOKENS = "tokens/-1"  # the demo cache's one layer: [clips, views, T, P+N, D]


def _non_finite(shard: Path) -> str:
    with h5py.File(shard, "r+") as f:
        tokens = f[TOKENS][2]
        tokens[0, 0, 0, :3] = [np.inf, -np.inf, np.nan]
        f[TOKENS][2] = tokens
        clip_id = f["clip_id"][2].decode()
    return f"row 2 (clip {clip_id!r}) {TOKENS}: 3 of"


def _bad_label(shard: Path) -> str:
    with h5py.File(shard, "r+") as f:
        f["label"][0] = 12  # the demo has classes 0..11
    return "label(s) outside the 12 classes at rows 0"


def _bad_split(shard: Path) -> str:
    with h5py.File(shard, "r+") as f:
        f["split"][1] = "training"
    return "split(s) not train/val/test at rows 1"


def _wrong_layout(shard: Path) -> str:
    with h5py.File(shard, "r+") as f:
        tokens = f[TOKENS][:]
        del f[TOKENS]
        f[TOKENS] = tokens[:, :, :, :-1]  # one patch token fewer per frame
    return f"{TOKENS} has shape"


DAMAGES: dict[str, Callable[[Path], str]] = {
    "blank-ids": _blank_ids,
    "duplicate": _duplicate,
    "truncated": _truncate,
    "non-finite": _non_finite,
    "label": _bad_label,
    "split": _bad_split,
    "layout": _wrong_layout,
}


def test_verify_passes_a_good_cache(demo_cache):
    result = invoke("verify", demo_cache)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines() == [f"verified {demo_cache}: 1 shards, 48 clips, no problems"]


@pytest.mark.parametrize("damage", DAMAGES)
def test_verify_names_each_problem(demo_cache, tmp_path, damage):
    cache = _copy(demo_cache, tmp_path)
    # the demo cache is one shard of 48 clips; split it so that problems can span shards
    _split_shard(cache)
    shard = _shards(cache)[1]
    expected = DAMAGES[damage](shard)
    result = invoke("verify", cache)
    assert result.exit_code == 1, result.output
    *problems, summary = result.stdout.strip().splitlines()
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{shard}: ") and expected in problems[0], problems[0]
    assert summary.endswith("1 problem(s)")


def test_verify_lists_every_problem_of_a_cache(demo_cache, tmp_path):
    cache = _copy(demo_cache, tmp_path)
    _split_shard(cache, parts=4)
    shards = _shards(cache)
    duplicate = _duplicate(shards[1])  # of a clip in shards[0]
    expected = [_non_finite(shards[0]), duplicate, _blank_ids(shards[2]), _truncate(shards[3])]
    result = invoke("verify", cache)
    assert result.exit_code == 1
    problems = result.stdout.strip().splitlines()[:-1]
    assert len(problems) == 4, problems
    for shard, text, line in zip(shards, expected, problems, strict=True):
        assert line.startswith(f"{shard}: ") and text in line, line


@pytest.mark.parametrize("damage, named", [("blank-ids", "a blank clip id"), ("duplicate", "a second time")])
def test_feature_cache_and_train_probe_refuse_blank_or_duplicate_ids(demo_cache, tmp_path, damage, named):
    cache = _copy(demo_cache, tmp_path)
    _split_shard(cache)
    shard = _shards(cache)[1]
    DAMAGES[damage](shard)
    with pytest.raises(StepcliError, match=f"shard {re.escape(str(shard))} holds .*{named}"):
        FeatureCache(cache)
    line = fails("train-probe", "--cache", cache, "--probe", "linear", "--out", tmp_path / "run")
    assert str(shard) in line and "stepcli verify" in line
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_verify_of_a_non_cache_is_one_line(tmp_path):
    assert "not a stepcli cache" in fails("verify", tmp_path)


def _split_shard(cache: Path, parts: int = 2) -> None:
    """Rewrite the cache's one shard as `parts` shards of the same clips (as a longer run would write)."""
    (single,) = _shards(cache)
    data = {}
    with h5py.File(single, "r") as f:
        f.visititems(lambda name, item: data.update({name: item[:]}) if isinstance(item, h5py.Dataset) else None)
        attrs = dict(f.attrs)
    single.unlink()
    bounds = np.linspace(0, len(data["clip_id"]), parts + 1).astype(int)
    for k in range(parts):
        with h5py.File(cache / "shards" / f"r000-{k:05d}.h5", "w") as f:
            for name, values in data.items():
                part = values[bounds[k] : bounds[k + 1]]
                dtype = h5py.string_dtype() if name in ("clip_id", "split") else part.dtype
                f.create_dataset(name, data=part, dtype=dtype)
            f.attrs.update(attrs)
