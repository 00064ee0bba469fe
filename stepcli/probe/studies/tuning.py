"""Tuned comparisons: every gradient-trained probe of `compare --sweep` trains one head per value
combination of the same grid, and its run is the head selected on validation.

Selection reads the validation split only (`training.sweep.select_head`); the test numbers of
every head are kept in its run's sweep.json for the record, never to choose by.
"""

from __future__ import annotations

from pathlib import Path

from stepcli.probe.config import TrainConfig
from stepcli.probe.models import probe_class
from stepcli.probe.training.sweep import SWEEP, SweepRecord, check_sweep, head_configs

Sweep = dict[str, list]


def sweep_for(probe: str, sweep: Sweep) -> Sweep:
    """The grid probe `probe` is tuned over: all of it, or nothing for a probe fitted in closed form
    (logreg and knn choose their own regularisation on validation)."""
    return {} if probe_class(probe).capabilities.fitted else dict(sweep)


def check_compare_sweep(probe: str, sweep: Sweep, options: dict) -> None:
    """Before any run: each swept key must be one every tuned probe accepts."""
    check_sweep(probe, sweep_for(probe, sweep), options)


def swept_differences(tcfg: TrainConfig, sweep: Sweep) -> tuple[TrainConfig, list[str]]:
    """The config a finished run in `tcfg.out` should hold for `sweep`, and why it cannot (`[]`: it can).

    A tuned run records its selected head's settings; which head that was comes from its sweep.json.
    """
    path = Path(tcfg.out) / SWEEP
    if not sweep:
        return tcfg, ([f"sweep: {SweepRecord.load(tcfg.out).swept} -> none"] if path.is_file() else [])
    if not path.is_file():
        return tcfg, [f"sweep: none -> {sweep}"]
    record = SweepRecord.load(tcfg.out)
    if record.swept != {k: list(v) for k, v in sweep.items()}:
        return tcfg, [f"sweep: {record.swept} -> {sweep}"]
    return head_configs(tcfg, sweep)[record.selected][1], []


def selected_values(run_dir: Path) -> str | None:
    """`lr=0.001, weight_decay=0.05`: the swept values of the head a tuned run selected; None untuned."""
    if not (Path(run_dir) / SWEEP).is_file():
        return None
    record = SweepRecord.load(run_dir)
    return ", ".join(f"{k}={v}" for k, v in record.heads[record.selected].values.items())
