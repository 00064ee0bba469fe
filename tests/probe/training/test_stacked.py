"""Stacked heads give the numbers of their separate runs: sweeps, seeds, every gradient-trained probe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ok

from stepcli.cache.records import TokenLayout
from stepcli.distributed import Group
from stepcli.probe.config import TrainConfig
from stepcli.probe.models import PROBES, build_probe
from stepcli.probe.training.optimizer import Head
from stepcli.probe.training.stacked import StackedHeads, StackedModel, group_heads
from stepcli.probe.training.sweep import SweepRecord

pytestmark = pytest.mark.usefixtures("one_thread")
LAYOUT = TokenLayout(num_frames=4, num_prefix=2, num_patches=6, dim=48)
GRADIENT_TRAINED = [name for name, cls in PROBES.items() if cls.capabilities.gradient_trained]
# every gradient-trained probe with its default options, and the step layouts with a stacked form of their own
VARIANTS = [(name, {}) for name in GRADIENT_TRAINED] + [
    ("step", {"block": "no-ff"}),
    ("step", {"block": "standard"}),
    ("step", {"temporal_pe": False}),
    ("step", {"cls": "frame"}),
    ("step", {"depth": 2}),
]
SETTINGS = [dict(lr=1e-3), dict(lr=3e-3, weight_decay=0.01), dict(lr=2e-3, warmup_epochs=0.0, clip_grad=0.05)]


def _heads(name: str, options: dict, seeds: list[int]) -> list[Head]:
    heads = []
    for seed, settings in zip(seeds, SETTINGS, strict=True):
        cfg = TrainConfig(cache=Path("-"), probe=name, out=Path("-"), epochs=2, seed=seed, **settings)
        torch.manual_seed(seed)
        heads.append(Head({}, cfg, build_probe(name, LAYOUT, 5, **options)))
    return heads


@pytest.mark.parametrize(
    ("name", "options"), VARIANTS, ids=[f"{n}-{'-'.join(map(str, o.values()))}" for n, o in VARIANTS]
)
@pytest.mark.parametrize("per_head_batches", [False, True], ids=["shared", "per-head"])
def test_stacked_heads_match_their_separate_runs(name: str, options: dict, per_head_batches: bool) -> None:
    """Three heads with their own lr, weight decay, warmup and clip (and, per head, their own
    batches, as seeds have): after several steps each stacked head's logits are its separate run's."""
    seeds = [0, 1, 2] if per_head_batches else [0, 0, 0]
    separate, stacked = _heads(name, options, seeds), _heads(name, options, seeds)
    assert len(group_heads([h.probe for h in stacked])) == 1
    group, clips, batch = Group(), 20, 8
    for head in separate:
        head.prepare(group, clips)
    trainer = StackedHeads(stacked, torch.device("cpu"), clips)
    generator = torch.Generator().manual_seed(0)
    for step in range(6):
        size = batch if step % 3 < 2 else clips - 2 * batch
        tokens = torch.randn(3, size, *LAYOUT.clip_shape, generator=generator) * 2 + 0.5
        labels = torch.randint(0, 5, (3, size), generator=generator)
        weights = torch.ones(size)
        if not per_head_batches:
            tokens, labels = tokens[0], labels[0]
        stats = trainer.step(tokens, labels, weights, size)
        for k, head in enumerate(separate):
            x, y = (tokens[k], labels[k]) if per_head_batches else (tokens, labels)
            loss, hits = head.step(group, x, y, weights, size)
            assert stats[k, 0].item() == pytest.approx(loss, rel=1e-4, abs=1e-5) and stats[k, 1].item() == hits
    probe_tokens = torch.randn(7, *LAYOUT.clip_shape, generator=generator)
    trainer.write_back()
    for a, b in zip(separate, stacked, strict=True):  # every buffer is the head's own (EP's BatchNorm statistics)
        for (name, mine), (_, theirs) in zip(b.probe.named_buffers(), a.probe.named_buffers(), strict=True):
            torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5, msg=name)
        a.probe.eval()
    trainer.model.eval()  # eval mode reaches every head
    assert not any(m.training for b in stacked for m in b.probe.modules())
    with torch.no_grad():
        eval_logits = trainer.model(probe_tokens)
        for k, a in enumerate(separate):
            torch.testing.assert_close(eval_logits[k], a.probe(probe_tokens), rtol=1e-4, atol=1e-5)
            a.probe.train()
    trainer.model.train()
    with torch.no_grad():
        stacked_logits = trainer.model(probe_tokens)
        for k, (a, b) in enumerate(zip(separate, stacked, strict=True)):
            expected = a.probe(probe_tokens)
            torch.testing.assert_close(b.probe(probe_tokens), expected, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(stacked_logits[k], expected, rtol=1e-4, atol=1e-5)
            assert trainer.lr(k) == pytest.approx(a.optimizer.param_groups[0]["lr"])
    # the heads did learn apart: different settings, different numbers
    assert not torch.allclose(stacked_logits[0], stacked_logits[1])


def test_heads_of_other_shapes_or_options_form_their_own_groups() -> None:
    probes = [
        build_probe("step", LAYOUT, 5, **o) for o in ({}, {"cls": "frame"}, {}, {"cls": "mean"}, {"cls": "frame"})
    ]
    assert group_heads(probes) == [[0, 2], [1, 4], [3]]
    model = StackedModel([probes[0], probes[2]], torch.device("cpu"))
    assert sum(p.numel() for p in model.parameters()) == 2 * probes[0].num_params()


def _top1(path: Path) -> float:
    return json.loads(path.read_text())["top1"]


FAST = ["--epochs", "2", "--batch-size", "8", "--quiet"]


@pytest.mark.parametrize("probe", ["step", "attentive"])
def test_sweep_selects_the_head_separate_runs_would(demo_cache: Path, tmp_path: Path, probe: str) -> None:
    """A stacked sweep and separate runs of its settings: the same selected head and the same numbers."""
    lrs = ["3e-4", "1e-3", "3e-3"]
    common = ["--cache", demo_cache, "--probe", probe, *FAST]
    ok("train-probe", *common, "--out", tmp_path / "sweep", "--sweep", f"lr={','.join(lrs)}")
    record = SweepRecord.load(tmp_path / "sweep")
    vals = []
    for lr, head in zip(lrs, record.heads, strict=True):
        ok("train-probe", *common, "--out", tmp_path / lr, "--lr", lr)
        metrics = json.loads((tmp_path / lr / "metrics.json").read_text())
        assert head.test["top1"] == metrics["top1"] and head.val["top1"] == metrics["val"]["top1"]
        assert head.val["loss"] == pytest.approx(metrics["val"]["loss"], rel=1e-4)
        vals.append((metrics["val"]["top1"], -metrics["val"]["loss"]))
    assert record.selected == max(range(len(lrs)), key=lambda i: (vals[i], -i))


def test_seeds_train_as_heads_and_match_their_plain_runs(demo_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "seeds"
    result = ok("train-probe", "--cache", demo_cache, "--probe", "step", "--out", out, *FAST[:-1], "--seeds", "0,1,2")
    assert "as heads of one pass" in result.stderr
    for seed in (0, 1, 2):
        ok("train-probe", "--cache", demo_cache, "--probe", "step", "--out", tmp_path / str(seed), *FAST,
           "--seed", str(seed))  # fmt: skip
        mine, plain = (
            json.loads((d / "metrics.json").read_text()) for d in (out / f"seed-{seed}", tmp_path / str(seed))
        )
        assert mine["top1"] == plain["top1"] and mine["best_epoch"] == plain["best_epoch"]
        assert mine["val"]["loss"] == pytest.approx(plain["val"]["loss"], rel=1e-4)
        config = json.loads((out / f"seed-{seed}" / "config.json").read_text())
        assert config["train"]["seed"] == seed


def test_seed_batches_read_each_clip_view_once_per_step(demo_cache: Path) -> None:
    from stepcli.cache.reader import FeatureCache
    from stepcli.probe.data import epoch_batches, epoch_views
    from stepcli.probe.training.epochs import seed_steps

    cache = FeatureCache(demo_cache)
    train = np.flatnonzero(cache.splits == "train")
    trains = {0: train, 5: np.sort(np.random.default_rng(5).permutation(train))}  # their own subsets work alike
    steps = list(seed_steps(cache, trains, 8, epoch=1, workers=0))
    assert len(steps) == len(epoch_batches(train, 8, 0, 1, cache.view_nbytes))
    for i, (size, tokens, labels, pick) in enumerate(steps):
        pairs = set()
        for seed, rows_of_seed in trains.items():
            rows = epoch_batches(rows_of_seed, 8, seed, 1, cache.view_nbytes)[i]
            views = epoch_views(cache, rows_of_seed, seed, 1)[rows]
            assert size == len(rows) and labels[pick[seed]].tolist() == cache.labels[rows].tolist()
            assert np.array_equal(tokens[pick[seed]].numpy(), cache.tokens(rows, views))
            pairs |= {(int(r), int(v)) for r, v in zip(rows, views, strict=True)}
        assert len(tokens) == len(pairs) <= 2 * size  # a clip view both orders hold is read once


def test_seeds_with_their_own_train_subsets_train_in_one_pass(demo_cache: Path, tmp_path: Path) -> None:
    """--train-fraction draws each seed's subset; the seeds still share one pass, each on its own subset."""
    out, args = tmp_path / "seeds", [*FAST[:-1], "--train-fraction", "0.5"]
    result = ok("train-probe", "--cache", demo_cache, "--probe", "attentive", "--out", out, *args, "--seeds", "0,1")
    assert "as heads of one pass" in result.stderr
    ok("train-probe", "--cache", demo_cache, "--probe", "attentive", "--out", tmp_path / "plain", *args, "--seed", "1")
    mine, plain = (json.loads((d / "splits.json").read_text()) for d in (out / "seed-1", tmp_path / "plain"))
    other = json.loads((out / "seed-0" / "splits.json").read_text())
    assert mine["train"] != other["train"] and mine["test"] == other["test"]  # each seed its own subset
    mine_m, plain_m = (json.loads((d / "metrics.json").read_text()) for d in (out / "seed-1", tmp_path / "plain"))
    assert mine_m["top1"] == plain_m["top1"] and mine_m["train_clips"] == plain_m["train_clips"]
    assert mine_m["val"]["loss"] == pytest.approx(plain_m["val"]["loss"], rel=1e-4)
    assert mine == plain


def test_compile_falls_back_to_eager_with_a_warning(caplog) -> None:
    """A backend that cannot compile: the step still runs, eagerly, with the same logits, and says so once."""
    from stepcli.probe.training.compiling import Compiled

    def cannot_compile(graph, example_inputs):
        raise RuntimeError("no compiler for this graph")

    probe = build_probe("step", LAYOUT, 5)
    tokens = torch.randn(3, *LAYOUT.clip_shape)
    compiled = Compiled(probe, backend=cannot_compile)
    with caplog.at_level("WARNING"):
        first, second = compiled(tokens), compiled(tokens)
    torch.testing.assert_close(first, probe(tokens))
    torch.testing.assert_close(second, probe(tokens))
    warned = [r.getMessage() for r in caplog.records if "--compile" in r.getMessage()]
    assert compiled.failed and len(warned) == 1 and "running eagerly" in warned[0]


def test_seeds_times_a_sweep_in_one_pass(demo_cache: Path, tmp_path: Path) -> None:
    """Every seed a sweep of its own, all heads in one pass: each seed's run selects among its own heads."""
    out = tmp_path / "seeds"
    ok("train-probe", "--cache", demo_cache, "--probe", "step", "--out", out, *FAST, "--seeds", "0,1",
       "--sweep", "lr=1e-3,3e-3")  # fmt: skip
    summary = json.loads((out / "seeds.json").read_text())
    for seed in (0, 1):
        record = SweepRecord.load(out / f"seed-{seed}")
        assert [h.values for h in record.heads] == [{"lr": 1e-3}, {"lr": 3e-3}]
        metrics = json.loads((out / f"seed-{seed}" / "metrics.json").read_text())
        assert metrics["top1"] == record.heads[record.selected].test["top1"] == summary["per_seed"]["top1"][seed]
        assert json.loads((out / f"seed-{seed}" / "config.json").read_text())["train"]["seed"] == seed


def test_a_run_trained_in_a_pass_of_heads_records_its_share_of_the_time(demo_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "seeds"
    ok("train-probe", "--cache", demo_cache, "--probe", "linear", "--out", out, *FAST, "--seeds", "0,1")
    for seed in (0, 1):
        timing = json.loads((out / f"seed-{seed}" / "timing.json").read_text())
        assert timing["heads_in_pass"] == 2 and "epoch_times_s" not in timing
        assert timing["train_time_s"] == pytest.approx(timing["pass_train_time_s"] / 2, abs=1e-3)
