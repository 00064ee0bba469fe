"""Tracking: log.csv has one row per epoch per head, whose numbers are those of metrics.json and
sweep.json; `--logger tensorboard` writes event files that tensorboard's own reader reads back."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from stepcli.probe.config import TrainConfig
from stepcli.probe.training.loggers import LOG_CSV, TENSORBOARD_DIR
from stepcli.probe.training.loop import train_probe


def _rows(run: Path) -> list[dict]:
    with (run / LOG_CSV).open() as handle:
        return list(csv.DictReader(handle))


def test_log_csv_has_a_row_per_epoch_per_head_matching_the_run(demo_cache, tmp_path) -> None:
    out = tmp_path / "run"
    cfg = TrainConfig(cache=demo_cache, probe="linear", out=out, epochs=3, device="cpu")
    train_probe(cfg, sweep={"lr": [1e-3, 3e-2]})
    rows = _rows(out)
    assert [(int(r["head"]), int(r["epoch"])) for r in rows] == [(h, e) for e in (1, 2, 3) for h in (0, 1)]
    assert float(rows[1]["lr"]) == pytest.approx(30 * float(rows[0]["lr"])) and float(rows[0]["lr"]) > 0
    assert {r["weight_decay"] for r in rows} == {"0.05"}
    metrics = json.loads((out / "metrics.json").read_text())
    sweep = json.loads((out / "sweep.json").read_text())
    chosen = sweep["selected"]
    # the run is its selected head at its best epoch: that row's val numbers are metrics.json's
    best = next(r for r in rows if int(r["head"]) == chosen and int(r["epoch"]) == metrics["best_epoch"])
    assert float(best["val_top1"]) == pytest.approx(metrics["val"]["top1"], abs=1e-6)
    assert float(best["val_loss"]) == pytest.approx(metrics["val"]["loss"], abs=1e-5)
    last = [r for r in rows if int(r["epoch"]) == 3]
    for head, row in zip(sweep["heads"], last, strict=True):  # each head's last epoch, as sweep.json logged it
        assert float(row["val_top1"]) == pytest.approx(head["log"][-1]["val_top1"], abs=1e-6)
        assert float(row["train_loss"]) == pytest.approx(head["log"][-1]["train_loss"], abs=1e-6)


def test_tensorboard_event_files_read_back_with_tensorboards_reader(demo_cache, tmp_path) -> None:
    pytest.importorskip("tensorboard", reason="the stepcli[tensorboard] extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    train_probe(TrainConfig(cache=demo_cache, probe="linear", out=out, epochs=2, device="cpu", logger="tensorboard"))
    events = EventAccumulator(str(out / TENSORBOARD_DIR / "head-0"))
    events.Reload()
    rows = _rows(out)
    val = events.Scalars("val/top1")
    assert [e.step for e in val] == [1, 2]
    assert [e.value for e in val] == pytest.approx([float(r["val_top1"]) for r in rows], abs=1e-6)
    assert {"train/loss", "lr", "weight_decay", "epoch_time_s"} <= set(events.Tags()["scalars"])
