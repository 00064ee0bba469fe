"""`stepcli frames`: frame-drop curves, the CLS attention per frame, and compare's per-pair chart."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import fails, ok
from test_compare import check_png

from stepcli.cache.reader import FeatureCache
from stepcli.errors import StepcliError
from stepcli.probe.evaluation.inference import predict_logits
from stepcli.probe.runs.rundir import load_run
from stepcli.probe.studies.frames import neighbour_maps

pytestmark = pytest.mark.usefixtures("one_thread")


def test_neighbour_maps_replace_one_frame_each() -> None:
    maps = neighbour_maps(4)
    assert [m.tolist() for m in maps] == [[1, 1, 2, 3], [0, 0, 2, 3], [0, 1, 1, 3], [0, 1, 2, 2]]
    with pytest.raises(StepcliError, match="neighbour"):
        neighbour_maps(1)


def test_frame_maps_feed_repeated_frames_and_permutations_stay_checked(demo_cache: Path, tmp_path: Path) -> None:
    ok("train-probe", "--cache", demo_cache, "--probe", "step", "--out", tmp_path / "step", "--epochs", "1", "--quiet")
    run, cache = load_run(tmp_path / "step"), FeatureCache(demo_cache)
    rows = run.rows(cache, "test")[:3]
    frames = cache.layout.num_frames
    index = neighbour_maps(frames)[2]
    mapped = predict_logits(run.probe, cache, rows, frame_orders=[index], frame_maps=True)[0]
    tokens = torch.from_numpy(cache.tokens(rows)).float()  # frame 2 is a copy of frame 1, frame 1 is kept
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(mapped), run.probe.eval()(tokens[:, index]))
    with pytest.raises(StepcliError, match="not a permutation"):
        predict_logits(run.probe, cache, rows, frame_orders=[index])
    with pytest.raises(StepcliError, match="indices in"):
        predict_logits(run.probe, cache, rows, frame_orders=[np.full(frames, frames)], frame_maps=True)


def test_frames_command_and_per_pair_chart(demo_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "compare"
    ok("compare", "--cache", demo_cache, "--out", out, "--probes", "linear,step,step[cls=mean]", "--epochs", "1",
       "--permutations", "2", "--quiet")  # fmt: skip
    check_png(out / "per_pair.png")
    ok("frames", "--compare", out, "--quiet")
    record = json.loads((out / "frames" / "frames.json").read_text())
    drops = {d["probe"]: d for d in record["drops"]}
    frames = FeatureCache(demo_cache).layout.num_frames
    assert list(drops) == ["linear", "step", "step[cls=mean]"]
    assert all(len(d["replaced_top1"]) == frames for d in drops.values())
    shuffle = json.loads((out / "runs" / "step" / "shuffle" / "results.json").read_text())
    assert drops["step"]["top1"] == shuffle["summary"]["original"]["top1"]
    # only the probe with a global CLS token has an attention map; each clip's mass over frames is at most 1
    (attention,) = record["attention"]
    assert attention["probe"] == "step" and len(attention["mass"]) == 12
    assert all(0 < sum(row) <= 1 + 1e-6 for row in attention["mass"])
    for png in ("frame_drop.png", "attention_step.png"):
        check_png(out / "frames" / png)
    assert "comparison.json" in fails("frames", "--compare", tmp_path)


def test_a_row_over_seeds_reads_one_seed_run(tmp_path: Path) -> None:
    from stepcli.probe.studies.seeds import one_run

    (tmp_path / "step" / "seed-1").mkdir(parents=True)
    (tmp_path / "step" / "seed-1" / "config.json").write_text("{}")
    assert one_run(tmp_path / "step") == tmp_path / "step" / "seed-1"
    assert one_run(tmp_path / "step" / "seed-1") == tmp_path / "step" / "seed-1"
    with pytest.raises(StepcliError, match="no finished run"):
        one_run(tmp_path)


def test_the_first_seed_is_the_lowest_not_the_first_name(tmp_path: Path) -> None:
    from stepcli.probe.studies.seeds import one_run

    for seed in (10, 2):
        (tmp_path / f"seed-{seed}").mkdir()
    assert one_run(tmp_path) == tmp_path / "seed-2"
